"""Which token governs the running code: current_token(), sleep(), stopped().

A ContextVar holds the token of the worker (thread, process, pool task) or
scope body that is running; outside any, the process's root token, which
``handle_signals`` stops. A ContextVar rather than a thread-local so asyncio
tasks started inside a worker inherit its token.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import threading
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Protocol

from quiesce._core import _validate
from quiesce._core._errors import Stopped
from quiesce._core._token import StopToken


class Cancellable(Protocol):
    """A link or timer entry a block drops when it ends."""

    def cancel(self) -> object: ...


class RootView:
    """What the context var holds outside every worker and scope: the root's flag.

    ``stopped()`` is called in hot loops, so outside any worker it must cost
    one context-var read and one slot read, like inside one: no ``None``
    check, no global lookup, no lazy creation of the root token (which costs
    an fd). The view's ``stopped`` mirrors the root token's: the root sets
    it with its own attribute (its ``_mirror``), in ``stop()``, in the
    watcher for a stop made in another process, and in any thread whose
    ``wait()`` saw the stop. A callback would not do: it runs in the
    stopping thread, possibly after a waiter has woken and looked.
    ``current_token()`` turns the view into the root.
    """

    __slots__ = ("stopped",)

    def __init__(self) -> None:
        self.stopped = False


OUTSIDE = RootView()
"""The context var's value outside every worker, scope and block."""

_current: ContextVar[StopToken | RootView] = ContextVar("quiesce_current_token", default=OUTSIDE)
_current_get = _current.get
CurrentReset = contextvars.Token[StopToken | RootView]
"""What ``_current.set`` returns: the way back to the value it replaced."""
_root: StopToken | None = None
_root_lock = threading.Lock()


def root_token() -> StopToken:
    """The process's root token (created on first use; a fresh one after fork)."""
    global _root
    if _root is None:
        with _root_lock:
            if _root is None:
                _root = StopToken()
                _root._mirror = OUTSIDE
    return _root


def set_root_token(token: StopToken) -> None:
    """Make ``token`` the root (a quiesce child process roots itself in its worker token)."""
    global _root
    with _root_lock:
        if _root is not None:
            _root._mirror = None  # no longer the root: its stop is not "outside" any more
        _root = token
        token._mirror = OUTSIDE  # first, then the flag: a stop in between is not lost
        OUTSIDE.stopped = token.stopped


def current_token() -> StopToken:
    """The stop token that governs the calling code.

    Inside a `Scope` worker (thread or process), a pool task, or the body of
    a `with Scope(...)` block, it is that worker's, task's or scope's token.
    Outside all of them it is the process's root token, which
    `handle_signals` (and `quiesce.run`) stop on SIGINT/SIGTERM. In a quiesce
    child process the root is the worker's own token. The value is held in a
    `contextvars.ContextVar`, so asyncio tasks started inside a worker
    inherit it.

    Returns:
        The current `StopToken`.

    Example:
        ```python
        def fetch_all(urls):                 # knows nothing about scopes
            token = quiesce.current_token()
            for url in urls:
                if token.stopped:
                    break
                fetch(url)

        with quiesce.Scope() as scope:
            scope.thread(fetch_all, urls)    # its token: the worker's
        ```
    """
    token = _current_get()
    return token if isinstance(token, StopToken) else root_token()


@contextlib.contextmanager
def using(token: StopToken) -> Iterator[StopToken]:
    reset = _current.set(token)
    try:
        yield token
    finally:
        _current.reset(reset)


def caller_deadline(token: StopToken) -> float | None:
    """The current token's deadline if it comes before ``token``'s, else None.

    For work started inside a deadline block but owned by something made
    outside it (a scope's worker, a pool task): it must end at the block's
    deadline too, by its owner's ladder.
    """
    deadline = current_token().deadline
    if deadline is None or (token.deadline is not None and token.deadline <= deadline):
        return None
    return deadline


def leave_block(reset: CurrentReset | None,
                replaced: StopToken | None, *handles: Cancellable | None) -> None:
    """End a block that made its own token current (a deadline block, a shield).

    Restores the token it replaced, and cancels the block's links and timer
    entries. A block left in another context than it was entered in (a
    generator resumed elsewhere) cannot reset there: the replaced token is
    set instead.
    """
    if reset is not None:
        try:
            _current.reset(reset)
        except ValueError:
            _current.set(OUTSIDE if replaced is None else replaced)
    for handle in handles:
        if handle is not None:
            handle.cancel()


def sleep(seconds: float) -> None:
    """Sleep `seconds`, or raise `Stopped` as soon as `current_token()` is stopped.

    The drop-in replacement for `time.sleep` in a worker's loop: a stop
    wakes it at once instead of after the nap.

    Args:
        seconds: How long to sleep; finite and >= 0.

    Raises:
        Stopped: The current token was stopped (before or during the sleep).
        ValueError: `seconds` is negative, NaN or infinite.
        TypeError: `seconds` is not a number (or is a bool).

    Example:
        ```python
        def poll():
            while True:
                check_the_queue()
                quiesce.sleep(10)        # a stop ends the worker here, at once
        ```
    """
    delay = _validate.required_seconds("seconds", seconds)
    token = current_token()
    if token.wait(delay):
        raise Stopped(token.reason)


def stopped() -> bool:
    """Whether `current_token()` is stopped.

    Returns:
        `current_token().stopped`.

    Example:
        ```python
        def crunch():
            while not quiesce.stopped():
                step()
        ```
    """
    return _current_get().stopped  # outside any worker: the root's view (see RootView)


def _after_fork_in_child() -> None:
    global _root, _root_lock
    _root_lock = threading.Lock()
    if _root is not None:
        _root._mirror = None  # the parent's root, stopped by the parent: not ours
    _root = None
    OUTSIDE.stopped = False  # the parent's root is not ours: a fresh one is made on first use


os.register_at_fork(after_in_child=_after_fork_in_child)
