"""Deadline blocks for plain code: move_on_after/at, fail_after/at, shield.

trio's cancel scopes, built on tokens instead of a scheduler. Entering a
block makes ``current_token()`` a local child of the token current until
then, whose deadline is the earliest of the block's and its parent's; the
one deadline timer (_deadline_timer) stops it at the block's own deadline,
and a parent's stop reaches it by the usual parent -> child link. So
everything that watches the current token (``quiesce.sleep``,
``token.wait``, ``stopped()``, ``raise_if_stopped()``, ``run_command``) and
everything started from it (scopes, workers, pools, child processes, which
get the absolute deadline in the pickled token) stops at the deadline
without knowing about blocks.

The swallowing rule, decided once at the block's end: a ``Stopped`` is
this block's own (swallowed by ``move_on``, turned into ``TimeoutError`` by
``fail``) when the block's own deadline has passed or ``cancel()`` was
called, and the parent is neither stopped nor past its own deadline. A stop
from above (a signal, an outer scope, an outer deadline, even one whose
timer has not fired yet) always propagates, to be swallowed by the block
that owns it. So with equal deadlines the outer block wins, as in trio.

The block's token is local (no fd, ~1 us): 10,000 nested blocks must not
need 10,000 eventfds. ``token.child()`` gives a shared token to hand to a
process. Leaving the block unlinks it from its parent and cancels its timer
entry at once (no ``weakref.finalize``, no garbage left for the gc).

``async with`` does the same and, because an ``await`` does not look at
tokens, also cancels the task when the block's token stops; the
``CancelledError`` that this causes is taken back (``Task.uncancel``) and
treated as the ``Stopped`` it stands for, as ``asyncio.timeout`` does.

Rejected: a deadline checked by ``stopped``/``wait`` themselves (a
``select`` on ``fileno()`` and every worker started in the block would miss
it); raising in the block's thread at the deadline (async exceptions land
anywhere, even in a ``finally``; quiesce keeps those for the ladder's
``interrupt_threads``); a shared token per block (an fd each).
"""

from __future__ import annotations

import functools
import time
import weakref
from types import TracebackType
from typing import TYPE_CHECKING, Any, final

from quiesce._core import _deadline_timer, _validate
from quiesce._core._context import CurrentReset, _current, current_token, leave_block
from quiesce._core._errors import Stopped
from quiesce._core._token import StopHandle, StopToken
from quiesce._core._token_core import LocalCore, SharedCore

if TYPE_CHECKING:
    import asyncio

_NEW, _OPEN, _CLOSED = 0, 1, 2


def _propagate(child_ref: weakref.ref[StopToken], parent_core: SharedCore | LocalCore) -> None:
    # The parent's core, not the parent: its callback must not hold the parent itself.
    child = child_ref()
    if child is not None:
        child.stop(parent_core.reason())


@final
class CancelScope:
    """A deadline block: returned by ``move_on_after``/``move_on_at``/``fail_after``/``fail_at``.

    Attributes:
        deadline: the block's own deadline (``time.monotonic()`` seconds), or
            None for no deadline (``inf``). An outer deadline may come first;
            ``quiesce.current_token().deadline`` inside is the earliest.
        expired: True once the block's own deadline has passed or ``cancel()``
            was called (frozen when the block ends).
        cancelled_caught: True if the block swallowed (or, for ``fail_*``,
            turned into ``TimeoutError``) a ``Stopped`` of its own.

    Made by the four functions, not directly; enter it once, with ``with``
    or ``async with``. Leaving a block that is not open raises RuntimeError.

    Example:
        ```python
        with quiesce.move_on_after(10) as cs:
            threading.Timer(1.0, cs.cancel).start()  # or end it early by hand
            quiesce.sleep(60)
        assert cs.cancelled_caught
        ```
    """

    __slots__ = ("__weakref__", "_arg", "_cancel_called", "_caught", "_deadline", "_entry",
                 "_expired", "_fail", "_link", "_name", "_parent", "_reset", "_state", "_task",
                 "_task_cancel_asked", "_task_link", "_token")

    def __init__(self, deadline: float | None, *, fail: bool, name: str, arg: object) -> None:
        self._deadline = deadline
        self._fail = fail
        self._name, self._arg = name, arg  # formatted only when needed (a hot path)
        self._entry: _deadline_timer.Entry | None = None
        self._state = _NEW
        self._cancel_called = False
        self._caught = False
        self._expired = False
        self._token: StopToken | None = None
        self._parent: StopToken | None = None
        self._link: StopHandle | None = None
        self._reset: CurrentReset | None = None
        self._task: asyncio.Task[Any] | None = None
        self._task_link: StopHandle | None = None
        self._task_cancel_asked = False

    # -- public ------------------------------------------------------------------
    @property
    def deadline(self) -> float | None:
        return self._deadline

    @property
    def expired(self) -> bool:
        if self._state == _CLOSED:
            return self._expired
        return self._own_cause(time.monotonic())

    @property
    def cancelled_caught(self) -> bool:
        return self._caught

    def cancel(self) -> None:
        """End the block now, as if its deadline had passed (from any thread).

        Its code sees the stop at its next check (``quiesce.sleep``,
        ``raise_if_stopped``...), and the ``Stopped`` is swallowed like a
        deadline's (``fail_*``: ``TimeoutError``). Idempotent.
        """
        self._cancel_called = True
        token = self._token
        if token is not None and self._state == _OPEN:
            token.stop(f"{self._what()}: cancelled")

    def _what(self) -> str:
        return f"{self._name}({self._arg!r})"

    def __repr__(self) -> str:
        state = ("expired" if self.expired else "not expired") if self._state else "not entered"
        return f"<CancelScope {self._what()} {state}>"

    # -- the block -------------------------------------------------------------------
    def __enter__(self) -> CancelScope:
        if self._state != _NEW:
            raise RuntimeError(f"{self._what()}: a deadline block can be entered only once")
        parent = current_token()
        token = StopToken._local()
        self._parent, self._token = parent, token
        # The parent first: if it is already stopped, its reason is the one kept.
        self._link = parent.on_stop(functools.partial(_propagate, weakref.ref(token),
                                                      parent._core))
        own, above = self._deadline, parent._deadline
        if own is not None and (above is None or own < above):
            token._deadline = own
            if own <= time.monotonic():  # already past: expires at once, not a tick later
                token.stop(f"{self._what()}: deadline passed")
            else:  # held weakly: a block never kept alive by its pending deadline
                self._entry = _deadline_timer.call_at(
                    own, functools.partial(_expire, weakref.ref(self)), fork_safe=True)
        else:  # the parent's deadline comes first: its stop reaches us through the link
            token._deadline = above
        self._reset = _current.set(token)
        self._state = _OPEN
        if self._cancel_called:  # after _OPEN: a cancel() racing with us is never lost
            token.stop(f"{self._what()}: cancelled")
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> bool:
        self._close()
        try:
            return self._judge(exc)
        finally:
            self._token = None  # its fds (if fileno() was asked) go now, not with `cs`

    async def __aenter__(self) -> CancelScope:
        import asyncio

        self.__enter__()
        task = asyncio.current_task()
        token = self._token
        if task is not None and token is not None:
            loop = asyncio.get_running_loop()
            self._task = task
            ref = weakref.ref(self)

            def on_stop() -> None:  # any thread: the timer, a signal's helper, cancel()
                try:
                    loop.call_soon_threadsafe(_cancel_task, ref)
                except RuntimeError:
                    pass  # the loop is closed: nothing left to cancel

            self._task_link = token.on_stop(on_stop)
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> bool:
        import asyncio

        task_link, self._task_link = self._task_link, None
        if task_link is not None:
            task_link.cancel()
        self._close()
        token, self._token = self._token, None
        task, self._task = self._task, None
        if self._task_cancel_asked and task is not None:
            self._task_cancel_asked = False
            if task.uncancel() == 0 and isinstance(exc, asyncio.CancelledError):
                # Our own cancellation, nobody else's: it stands for a stop.
                stop = Stopped(token.reason if token is not None else None)
                if self._judge(stop):
                    return True
                raise stop from None
        return self._judge(exc)

    # -- decisions -------------------------------------------------------------------
    def _own_cause(self, now: float) -> bool:
        own = self._deadline
        return self._cancel_called or (own is not None and now >= own)

    def _close(self) -> None:
        if self._state != _OPEN:
            raise RuntimeError(f"{self._what()}: leaving a deadline block that is not open")
        self._state = _CLOSED
        reset, link, entry = self._reset, self._link, self._entry
        self._reset = self._link = self._entry = None
        leave_block(reset, self._parent, link, entry)
        self._expired = self._own_cause(time.monotonic())

    def _judge(self, exc: BaseException | None) -> bool:
        """True to swallow ``exc``; may raise TimeoutError instead (``fail_*``)."""
        if not isinstance(exc, Stopped) or not self._expired:
            return False
        parent = self._parent
        assert parent is not None
        if parent.stopped or parent._core.is_set():  # the shared state: maybe another process
            return False  # a stop from above: the block that owns it decides
        above = parent._deadline
        if above is not None and time.monotonic() >= above:
            return False  # an outer deadline passed too: the outer block swallows it
        self._caught = True
        if self._fail:
            raise TimeoutError(f"{self._what()}: deadline passed") from exc
        return True


def _expire(ref: weakref.ref[CancelScope]) -> None:
    """On the timer thread, at the block's own deadline."""
    scope = ref()
    token = scope._token if scope is not None and scope._state == _OPEN else None
    if token is not None and scope is not None:
        token.stop(f"{scope._what()}: deadline passed")


def _cancel_task(ref: weakref.ref[CancelScope]) -> None:
    """In the event loop: cancel the block's task once, if the block is still open."""
    scope = ref()
    if scope is None or scope._state != _OPEN or scope._task_cancel_asked:
        return
    task = scope._task
    if task is not None and not task.done():
        scope._task_cancel_asked = True
        token = scope._token
        task.cancel(token.reason if token is not None else None)


def _relative(name: str, seconds: object, fail: bool, what: str) -> CancelScope:
    limit = _validate.limit_seconds(name, seconds)
    deadline = None if limit is None else time.monotonic() + limit
    return CancelScope(deadline, fail=fail, name=what, arg=seconds)


def _absolute(name: str, deadline: object, fail: bool, what: str) -> CancelScope:
    at = _validate.deadline_time(name, deadline, time.monotonic())
    return CancelScope(at, fail=fail, name=what, arg=deadline)


def move_on_after(seconds: float) -> CancelScope:
    """A block that stops at a deadline ``seconds`` from now, then carries on after it.

    Inside the block ``quiesce.current_token()`` also stops at the deadline,
    so ``quiesce.sleep``, ``token.wait``, ``quiesce.stopped()`` and
    ``raise_if_stopped()`` see it, and threads, processes, subprocesses and
    pool tasks started inside stop then too. The ``Stopped`` this causes is
    swallowed at the end of the block and ``cs.expired`` is True. A stop
    from above (a signal, an outer scope or deadline) is never swallowed.
    Code that never checks its token is not interrupted. Also usable as
    ``async with`` (the task is then cancelled at the deadline).

    Args:
        seconds: seconds from now, >= 0; ``inf`` or a huge value: no deadline.

    Raises:
        TypeError: ``seconds`` is not a number (or is a bool).
        ValueError: ``seconds`` is negative or NaN.

    Example:
        ```python
        with quiesce.move_on_after(2.0) as cs:
            while True:
                quiesce.sleep(0.5)  # raises Stopped at the deadline
        print(cs.expired)  # True
        ```
    """
    return _relative("seconds", seconds, False, "move_on_after")


def move_on_at(deadline: float) -> CancelScope:
    """``move_on_after`` with an absolute ``time.monotonic()`` deadline.

    Args:
        deadline: a ``time.monotonic()`` value; one already past expires at
            once; ``inf`` or far away: no deadline.

    Raises:
        TypeError: ``deadline`` is not a number (or is a bool).
        ValueError: ``deadline`` is NaN.

    Example:
        ```python
        end = time.monotonic() + 10
        for item in work:
            with quiesce.move_on_at(end):
                process(item)
        ```
    """
    return _absolute("deadline", deadline, False, "move_on_at")


def fail_after(seconds: float) -> CancelScope:
    """``move_on_after``, but a ``Stopped`` caused by the deadline raises ``TimeoutError``.

    As in trio, the block raises only if its code was stopped: a block that
    ends on its own after the deadline without checking its token does not.

    Args:
        seconds: seconds from now, >= 0; ``inf`` or a huge value: no deadline.

    Raises:
        TimeoutError: at the end of the block, when the deadline stopped it.
        TypeError: ``seconds`` is not a number (or is a bool).
        ValueError: ``seconds`` is negative or NaN.

    Example:
        ```python
        with quiesce.fail_after(5.0):
            quiesce.run_command(["make", "test"])  # TimeoutError after 5 s
        ```
    """
    return _relative("seconds", seconds, True, "fail_after")


def fail_at(deadline: float) -> CancelScope:
    """``fail_after`` with an absolute ``time.monotonic()`` deadline.

    Args:
        deadline: a ``time.monotonic()`` value; one already past expires at
            once; ``inf`` or far away: no deadline.

    Raises:
        TimeoutError: at the end of the block, when the deadline stopped it.
        TypeError: ``deadline`` is not a number (or is a bool).
        ValueError: ``deadline`` is NaN.

    Example:
        ```python
        with quiesce.fail_at(time.monotonic() + 1.0):
            quiesce.sleep(5)  # TimeoutError after 1 s
        ```
    """
    return _absolute("deadline", deadline, True, "fail_at")
