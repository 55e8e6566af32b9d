"""StopToken: a one-shot, cooperative stop request for threads and processes.

A token is storage (``_token_core``: shared memory and an eventfd, or a
local flag) plus what a process does with it: ``stopped`` as a plain
attribute, callbacks and child links run by the stopping thread, and a
deadline served by the one deadline timer. Stops made in another process
reach this process's copy through the watcher (``_token_watch``), which
watches only tokens that have crossed a process boundary: pickled,
unpickled, or alive across a fork. After a fork the child drops the
callbacks it inherited (they belong to the parent's objects) and watches
every inherited token afresh.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any, Protocol, final

from quiesce._core import _deadline_timer, _token_watch, _validate
from quiesce._core._errors import Stopped
from quiesce._core._log import log  # logging imported on first use
from quiesce._core._main_wait import in_slices
from quiesce._core._token_core import LocalCore, SharedCore

_ids = itertools.count(1)


class Mirror(Protocol):
    """Anything with a ``stopped`` flag a token may keep in step with its own."""

    stopped: bool


@final
class StopHandle:
    """Returned by `StopToken.on_stop`; `cancel()` removes the callback.

    A handle holds its token weakly: keeping a handle never keeps a token
    (and its file descriptor) alive.

    Example:
        ```python
        handle = token.on_stop(lambda: print("stopping"))
        ...
        handle.cancel()                 # no longer interested
        ```
    """

    __slots__ = ("_key", "_token")

    def __init__(self, token: StopToken, key: int) -> None:
        # A weak reference: a handle kept by a child token's finalizer must
        # not keep its parent alive.
        self._token: weakref.ref[StopToken] | None = weakref.ref(token)
        self._key = key

    def cancel(self) -> bool:
        """Remove the callback, unless it already ran.

        Returns:
            True if the callback was removed before it ran; False if it
            already ran, was already cancelled, or its token is gone.
        """
        ref, self._token = self._token, None
        token = ref() if ref is not None else None
        return token is not None and token._remove_callback(self._key)


@final
class StopToken:
    """A one-shot stop request, shared by threads and by child processes.

    Pass it to a thread or to a `multiprocessing.Process` (fork, forkserver
    or spawn) as an argument; `stop()` from any of them reaches all of them.
    Once stopped, a token stays stopped. `stopped` is one attribute read,
    cheap enough for a hot loop (see Measurements in the docs); `wait()`
    and `fileno()` wake at once when the token is stopped, whoever stopped
    it.

    Workers of a `Scope` and tasks of a pool get a token of their own:
    read it with `quiesce.current_token()`, or declare a parameter named
    `token`. Make a `StopToken()` yourself to stop code that quiesce does
    not start.

    Each token holds one file descriptor (an eventfd on Linux), closed when
    the token is garbage collected.

    Example:
        ```python
        import multiprocessing, quiesce

        def work(token):
            while not token.stopped:
                token.wait(1.0)         # an interruptible sleep

        token = quiesce.StopToken()
        child = multiprocessing.Process(target=work, args=(token,))
        child.start()
        token.stop("done")              # the child sees it at once
        child.join()
        ```
    """

    # ``stopped`` is a plain slot, not a property: on CPython 3.11 only an
    # attribute read is as cheap as ``threading.Event.is_set()``. ``stop()``
    # sets it in this process; a stop made in another process flips the
    # shared flag and the eventfd, and the watcher thread (end of module) sets
    # the attribute, so a loop spinning on it sees such a stop within about
    # one GIL switch interval (5 ms). ``wait()``, ``fileno()`` and
    # ``raise_if_stopped()`` read the shared state itself, at once.
    # Only tokens that have crossed a process boundary (pickled, unpickled, or
    # alive across a fork) are watched, so a thread's token costs the watcher
    # nothing.
    __slots__ = {
        "__weakref__": None,
        "_callbacks": None,
        "_core": None,
        "_crossed": None,
        "_deadline": None,
        "_expiry": None,
        "_fired": None,
        "_lock": None,
        "_mirror": None,
        "_stopped_at": None,
        "_stopping": None,
        "_watched": None,
        "stopped": "True once the token is stopped (read it; never assign it). "
                   "Cheap enough for a hot loop: one attribute read.",
    }
    stopped: bool
    """Whether the token has been stopped (read it; never assign it).

    One attribute read, no system call and no lock: poll it in a hot loop.
    A stop made in this process shows at once; one made in another process
    shows within about one GIL switch interval (~5 ms), while `wait()`,
    `fileno()` and `raise_if_stopped()` see it at once. To sleep until a
    stop, use `wait`.

    Example:
        ```python
        while not token.stopped:
            crunch_one_item()
        ```
    """

    def __init__(self) -> None:
        self._setup(SharedCore())

    @classmethod
    def _local(cls) -> StopToken:
        """A token that never crosses a process boundary (cheap: thread-pool tasks)."""
        token = cls.__new__(cls)
        token._setup(LocalCore())
        return token

    def _setup(self, core: SharedCore | LocalCore) -> None:
        self._core = core
        self.stopped = core.is_set()
        # Reentrant: a garbage collection may run inside any allocation made under it,
        # and a collected child's finalizer cancels its link here (_remove_callback).
        self._lock = threading.RLock()
        self._callbacks: dict[int, Callable[[], object]] = {}
        self._fired = False
        # An object whose `stopped` follows ours at once (the root's view outside workers,
        # see _context.RootView): unlike a callback, never later than `wait()` returning.
        self._mirror: Mirror | None = None
        self._stopping = False  # a thread of this process is in stop(): it runs the callbacks
        # When this process learned of the stop (time.monotonic()): a worker's stop_ms.
        self._stopped_at: float | None = time.monotonic() if self.stopped else None
        self._watched = False
        self._crossed = False
        if core.shared:
            _shared_tokens.add(self)
        self._deadline: float | None = None  # time.monotonic(); the earliest along the chain
        self._expiry: _deadline_timer.Entry | None = None  # our own deadline's timer entry

    # -- the request -------------------------------------------------------
    def stop(self, reason: str | None = None) -> None:
        """Request a stop; idempotent, the first reason given is kept.

        Callbacks registered with `on_stop` (and the links to `child()`
        tokens) run in the calling thread, before `stop` returns; a stop
        made from another process runs them in quiesce's watcher thread.
        Never blocks on the workers that hold the token.

        Args:
            reason: Why; readable as `reason` and carried by the `Stopped`
                that `raise_if_stopped` raises.

        Raises:
            TypeError: `reason` is neither a str nor None.

        Example:
            ```python
            token.stop("user pressed Cancel")
            token.reason                # 'user pressed Cancel'
            ```
        """
        if reason is not None and not isinstance(reason, str):
            raise TypeError(f"reason must be a str or None, not {type(reason).__name__}")
        try:
            if not self.stopped:  # stopped here, or seen stopped by the watcher: fd written
                # Before the fd is written: the watcher (this token may have crossed) and
                # waiters woken by it leave the callbacks to us, as documented.
                self._stopping = True
                self._stopped_at = time.monotonic()
                self._core.set(reason)
        finally:  # even if a signal handler raises in between: the callbacks are ours now
            if self._core.is_set():
                if self._stopped_at is None:
                    self._stopped_at = time.monotonic()
                self._mark_stopped()
                self._fire()
            else:  # interrupted before the flag was written: nothing to leave to us
                self._stopping = False

    @property
    def reason(self) -> str | None:
        """The reason given to the first `stop()`, or None (not stopped, or no reason).

        Quiesce's own stops give one: `"scope 'job' exited"`,
        `"received SIGTERM"`, `"worker 'job/fetch-1' failed: ..."`.
        """
        return self._core.reason()

    def wait(self, timeout: float | None = None) -> bool:
        """Sleep until the token is stopped or `timeout` seconds pass.

        An interruptible `time.sleep`: it returns the moment the token is
        stopped, from any thread or process. In the main thread it waits in
        short slices, so signal handlers still run.

        Args:
            timeout: Seconds, >= 0; None waits for ever.

        Returns:
            True if the token is stopped, False if the timeout passed first.

        Raises:
            ValueError: `timeout` is negative, NaN or infinite (None: no limit).
            TypeError: `timeout` is not a number (or is a bool).

        Example:
            ```python
            while not token.wait(timeout=10.0):     # wakes at once on stop
                poll_the_queue()
            ```
        """
        timeout = _validate.seconds("timeout", timeout, allow_none=True)
        if in_slices(self._core.wait, timeout):
            if not self.stopped:  # else this process has seen it: whoever did fires
                self._observe()  # perhaps a stop from another process: callbacks run now
            return True
        return False

    async def wait_async(self, timeout: float | None = None) -> bool:
        """`wait()` for coroutines: never blocks the event loop, never polls.

        The loop itself watches the token's file descriptor
        (`loop.add_reader`), so the wake-up costs what an `asyncio.Event`
        set with `call_soon_threadsafe` costs, and a stop made in another
        process wakes it too. Any number of coroutines may wait on one token.

        Args:
            timeout: Seconds, >= 0; None waits for ever.

        Returns:
            True as soon as the token is stopped, False if the timeout
            passed first.

        Raises:
            ValueError: `timeout` is negative, NaN or infinite (None: no limit).
            TypeError: `timeout` is not a number (or is a bool).
            RuntimeError: No event loop is running in this thread.

        Example:
            ```python
            async def heartbeat(token: quiesce.StopToken) -> None:
                while not await token.wait_async(timeout=1.0):
                    print("still here")
            ```
        """
        timeout = _validate.seconds("timeout", timeout, allow_none=True)
        from quiesce._core._async_wait import wait_token  # asyncio only for asyncio users

        if await wait_token(self, lambda: self.stopped or self._core.is_set(), timeout,
                            shared=self._core.shared):
            self._observe()  # perhaps a stop from another process: callbacks run now
            return True
        return False

    def raise_if_stopped(self) -> None:
        """Raise `Stopped` if the token is stopped; otherwise do nothing.

        A check point for long computations: the worker unwinds through its
        `finally` and `with` blocks and ends as `stopped`.

        Raises:
            Stopped: The token is stopped; its `reason` is the token's.

        Example:
            ```python
            for chunk in chunks:
                token.raise_if_stopped()
                process(chunk)
            ```
        """
        if self.stopped or self._core.is_set():
            self._observe()
            raise Stopped(self._core.reason())

    def fileno(self) -> int:
        """A file descriptor that becomes readable once the token is stopped.

        For code that waits in `select`, `selectors` or `poll` on sockets or
        pipes: add this fd and the wait also ends on stop. Never read from
        it or close it; it stays readable once stopped, for every waiter in
        every process. It is owned by the token and closed with it.

        Returns:
            The descriptor (an eventfd on Linux, a pipe elsewhere).

        Example:
            ```python
                        sel = selectors.DefaultSelector()
            sel.register(sock, selectors.EVENT_READ, "data")
            sel.register(token.fileno(), selectors.EVENT_READ, "stop")
            for key, _ in sel.select():
                if key.data == "stop":
                    return
            ```
        """
        return self._core.fileno()

    # -- callbacks and children -----------------------------------------------
    def on_stop(self, callback: Callable[[], object]) -> StopHandle:
        """Run `callback()` once when the token stops (at once if it already has).

        The callback runs in the thread that calls `stop()`; a stop made by
        another process runs it in quiesce's watcher thread. Keep it short
        and non-blocking. An exception it raises is logged (logger
        `quiesce`), not propagated.

        Args:
            callback: Called with no argument.

        Returns:
            A handle whose `cancel()` removes the callback.

        Raises:
            TypeError: `callback` is not callable.

        Example:
            ```python
            server = make_server()
            token.on_stop(server.shutdown)      # end serve_forever() on stop
            server.serve_forever()
            ```
        """
        _validate.callable_target("callback", callback)
        key = next(_ids)
        with self._lock:
            added = not self._fired
            if added:
                self._callbacks[key] = callback
        handle = StopHandle(self, key)
        if not added:
            _run_callback(callback)
        return handle

    def child(self, timeout: float | None = None) -> StopToken:
        """A new token that stops when this one stops (never the reverse).

        Stopping the child leaves this token running: use it to stop one part
        of a program alone. The link is dropped when the child is collected.

        Args:
            timeout: seconds (>= 0) after which the child also stops on its own,
                with the reason ``"deadline passed"``. ``None``, ``inf`` or a
                huge value: no deadline of its own. The child's ``deadline`` is
                the earliest of its own and this token's.

        Returns:
            A new, running `StopToken` (already stopped if this one is).

        Raises:
            TypeError: ``timeout`` is not a number (or is a bool).
            ValueError: ``timeout`` is negative or NaN.

        Example:
            ```python
            job = quiesce.StopToken()
            download = job.child(timeout=5.0)   # stops with job, or after 5 s
            download.stop()             # job.stopped is still False
            job.stop()                  # would also have stopped download
            ```
        """
        deadline = None
        if timeout is not None:
            limit = _validate.limit_seconds("timeout", timeout)
            if limit is not None:
                deadline = time.monotonic() + limit
        return self._child(StopToken(), deadline)

    def _child_local(self) -> StopToken:
        return self._child(StopToken._local())

    @property
    def deadline(self) -> float | None:
        """When this token stops on its own, in ``time.monotonic()`` seconds, or None.

        The earliest deadline along the chain of parents (``child(timeout=)``,
        ``quiesce.move_on_after`` blocks); it travels with the token to child
        processes, where ``time.monotonic()`` is the same clock (Linux).
        """
        return self._deadline

    def remaining(self) -> float | None:
        """Seconds left until ``deadline`` (0.0 once passed), or None without a deadline.

        Example::

            budget = token.remaining()
            sock.settimeout(None if budget is None else max(budget, 0.001))
        """
        deadline = self._deadline
        return None if deadline is None else max(0.0, deadline - time.monotonic())

    def _set_deadline(self, parent: float | None, own: float | None,
                      reason: str = "deadline passed") -> None:
        """Inherit ``parent``'s deadline; arm the timer for ``own`` only if it is earlier."""
        if own is not None and (parent is None or own < parent):
            self._deadline = own
            if own <= time.monotonic():
                self.stop(reason)  # already past: stopped at once, not a timer tick later
            else:
                self._expiry = _arm_expiry(self, own, reason)
        else:
            self._deadline = parent

    def _child(self, child: StopToken, deadline: float | None = None) -> StopToken:
        child._set_deadline(self._deadline, deadline)
        # The parent holds the child weakly and neither holds itself, so no
        # reference cycle delays closing a token's fds until a gc pass.
        child_ref = weakref.ref(child)
        core = self._core

        def propagate() -> None:
            target = child_ref()
            if target is not None and not target.stopped:  # a scope stops its workers first
                target.stop(core.reason())

        handle = self.on_stop(propagate)
        weakref.finalize(child, handle.cancel)
        return child

    def _remove_callback(self, key: int) -> bool:
        with self._lock:
            return self._callbacks.pop(key, None) is not None

    def _observe(self) -> None:
        """The shared state says stopped (maybe by another process): catch up locally.

        If a thread of this process made the stop, it runs the callbacks itself.
        """
        if self._stopped_at is None:
            self._stopped_at = time.monotonic()
        self._mark_stopped()
        self._core.wake_local()  # waiters of a core not yet exposed sleep on an Event
        if not self._stopping:
            self._fire()

    def _mark_stopped(self) -> None:
        """``stopped`` (and the mirror's, if any) becomes True: before any callback runs,
        and before ``wait()`` returns in any thread of this process."""
        self.stopped = True
        mirror = self._mirror
        if mirror is not None:
            mirror.stopped = True

    def _cross(self) -> None:
        """This token now lives in another process too: a stop made there must reach us,
        and a stop made here must write the fd a waiter there may poll (exposed at
        once, not when the watcher gets to it: a token made by another thread while
        a fork ran its hooks is exposed by the hook after the fork)."""
        if self._crossed or not self._core.shared:
            return
        core = self._core
        if isinstance(core, SharedCore):
            core.expose()
        with self._lock:
            self._crossed = True
            if self._watched or self._fired:
                return
            self._watched = True
        try:
            _token_watch.watcher().watch(self)
        except BaseException:  # no thread to be had (EAGAIN): let a later crossing retry
            with self._lock:
                self._watched = self._crossed = False
            raise

    def _fire(self) -> None:
        """Run the local callbacks once (the flag may have been set elsewhere)."""
        if self._fired:
            return
        with self._lock:
            if self._fired:
                return
            self._fired = True
            callbacks, self._callbacks = self._callbacks, {}
        # _run_callback inlined: a scope's stop runs one per worker
        for callback in callbacks.values():
            try:
                callback()
            except Exception:
                log.exception("quiesce: a StopToken.on_stop callback raised")

    def _is_shared(self) -> bool:
        return self._core.shared

    def __reduce__(self) -> tuple[Any, ...]:
        # The absolute deadline goes along: the other process keeps it on its own
        # timer too (CLOCK_MONOTONIC is machine-wide on Linux).
        reduced = (_rebuild_token, (self._core.reduce(), self._deadline))
        self._cross()
        return reduced

    def __repr__(self) -> str:
        state = f"stopped reason={self.reason!r}" if self.stopped else "running"
        kind = "" if self._core.shared else " local"
        return f"<StopToken{kind} {state}>"


def _rebuild_token(core_args: tuple[Any, ...], deadline: float | None = None) -> StopToken:
    rebuild, args = core_args
    token = StopToken.__new__(StopToken)
    token._setup(rebuild(*args))
    token._cross()
    if deadline is not None:
        token._set_deadline(None, deadline)
    return token


def _arm_expiry(token: StopToken, deadline: float, reason: str) -> _deadline_timer.Entry:
    """Stop ``token`` at ``deadline`` on the shared timer, holding it weakly.

    The entry is cancelled when the token is collected, so a token dropped
    early leaves nothing behind until its deadline.
    """
    cell: list[_deadline_timer.Entry] = []
    ref = weakref.ref(token, lambda _: cell[0].cancel() if cell else None)

    def expire() -> None:
        target = ref()
        if target is not None:
            target.stop(reason)

    entry = _deadline_timer.call_at(deadline, expire, fork_safe=True)
    cell.append(entry)
    return entry


def _run_callback(callback: Callable[[], object]) -> None:
    try:
        callback()
    except Exception:
        log.exception("quiesce: a StopToken.on_stop callback raised")


# Every live shared token, so that a fork can mark them all as crossed: after
# a fork without exec (multiprocessing's fork method) both processes hold the
# same tokens without any pickling having told them so.
_shared_tokens: weakref.WeakSet[StopToken] = weakref.WeakSet()


def _snapshot_shared_tokens() -> list[StopToken]:
    """The live shared tokens, copied. The fork hooks run Python code, so another
    thread may make a token meanwhile, and iterating the WeakSet then raises
    "Set changed size during iteration" (a hook's error is only printed, and the
    tokens after it went unexposed or unwatched): copy again."""
    while True:
        try:
            return list(_shared_tokens)
        except RuntimeError:
            continue


def _expose_all_before_fork() -> None:
    """Both sides of the fork may wait on every token's fd: each stop must write it.

    Before the fork, so that a stop made in the parent while the fork runs
    writes the fd. A token another thread makes while the hooks run (they
    are Python code: the GIL can change hands) is exposed by the hook after
    the fork (``_cross``); a stop of that very token made between the fork
    and that hook, by yet another thread, is the one case left unwritten.
    """
    for token in _snapshot_shared_tokens():
        core = token._core
        if isinstance(core, SharedCore):
            core.expose()


def _cross_all_after_fork() -> None:
    for token in _snapshot_shared_tokens():
        if not token.stopped:
            try:
                token._cross()
            except Exception as exc:  # no watcher thread to be had now: a later fork retries
                log.warning("quiesce: cannot watch a token for stops made in a forked child "
                            "(%s: %s)", type(exc).__name__, exc)


def _after_fork_in_child() -> None:
    _token_watch.forget_after_fork()  # threads and selectors do not survive fork
    tokens = _snapshot_shared_tokens()
    for token in tokens:
        token._watched = False  # the parent's watcher watched it, not ours
        token._crossed = False
        token._stopping = False  # a parent thread's stop() does not go on here
        token._lock = threading.RLock()  # held by a parent thread at fork time, perhaps
        # Callbacks registered before the fork belong to the parent's objects
        # (its scopes, workers, pools), whose copies here own nothing and may
        # hold locks taken by a thread that does not exist here. The parent
        # still runs them, and the links between tokens they implement write
        # shared memory that this process sees, so here they are dropped.
        token._callbacks = {}
    for token in tokens:
        if not token._fired:
            token._cross()


os.register_at_fork(before=_expose_all_before_fork, after_in_parent=_cross_all_after_fork,
                    after_in_child=_after_fork_in_child)
