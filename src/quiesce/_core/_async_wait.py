"""Waiting for a stop from a coroutine, without blocking or polling the event loop.

``await token.wait_async()`` must wake on a stop made by any thread or any
process, as ``token.wait()`` does. A token's ``fileno()`` becomes readable
once it is stopped and is never read, so the event loop itself can watch
it: ``loop.add_reader`` on it costs no thread and no timer, and the wake-up
is one epoll return, like ``asyncio.Event`` set through
``call_soon_threadsafe`` (see bench/bench_aio.py).

Each (loop, token) pair being awaited gets one *duplicate* of the token's
fd, registered once, however many coroutines wait on it: asyncio keeps one
reader per fd and a second ``add_reader`` on the same number silently
replaces the first, so registering ``token.fileno()`` itself would break a
user who watches that fd too (the way to wait on a token before this
existed). The duplicate is closed as soon as the last waiter leaves.

A shared token's stop always writes its eventfd, so watching that fd wakes
the loop with no further system call; an ``on_stop`` callback handing the
wake-up to the loop with ``call_soon_threadsafe`` would add a self-pipe
write (measured 1.6x the reader's latency). A *local* token (a task's, a
pool task's) has no fd until asked for one, and cannot be stopped from
another process: it takes that ``on_stop`` path, as do loops without
``add_reader`` (a proactor loop, some custom loops), where stops from
another process arrive through the token watcher thread.

``TaskCanceller`` is the other direction, a stop *cancelling* a task: the
callback runs in whatever thread stopped the token, so the cancel is
always handed to the loop (never ``task.cancel()`` from a foreign thread),
and it is dropped if the guarded code has already left its block.

Rejected: a thread blocked in ``token.wait()`` per waiter (a thread per
await, and it outlives a cancelled waiter until the stop comes); polling
``token.stopped`` with ``asyncio.sleep`` (latency or CPU, never both low).
"""

from __future__ import annotations

import asyncio
import asyncio.events as asyncio_events
import os
import weakref
from collections.abc import Callable
from typing import Protocol


class _Handle(Protocol):
    def cancel(self) -> bool: ...


class StopToken(Protocol):
    """What this module needs of a StopToken (the token module imports this one)."""

    @property
    def stopped(self) -> bool: ...
    @property
    def reason(self) -> str | None: ...
    def fileno(self) -> int: ...
    def on_stop(self, callback: Callable[[], object]) -> _Handle: ...

# asyncio caps a selector wait at one day anyway; a longer timeout is re-armed.
_MAX_TIMER = 86400.0


class _Reader:
    """One registration of a duplicated token fd on one loop, shared by its waiters."""

    __slots__ = ("fd", "key", "loop", "token", "waiters", "woken")

    def __init__(self, loop: asyncio.AbstractEventLoop, token: StopToken, key: int) -> None:
        self.loop, self.token, self.key = loop, token, key
        self.waiters: set[asyncio.Future[None]] = set()
        self.woken = False
        self.fd = os.dup(token.fileno())
        os.set_inheritable(self.fd, False)
        try:
            loop.add_reader(self.fd, self._readable)
        except BaseException:
            os.close(self.fd)
            raise

    def _readable(self) -> None:
        if self.woken:
            return  # the fd stays readable until the deferred close below
        self.woken = True
        for waiter in self.waiters:
            if not waiter.done():
                waiter.set_result(None)
        self.waiters.clear()
        # Two system calls (epoll_ctl, close) that may hand the GIL to the thread that
        # stopped the token: not before the waiters have run, nor before what *they*
        # wake (the task that awaits a waiting task) has: a turn of the loop later.
        # (Meanwhile the fd is still readable: each turn calls us again, and we return.)
        self.loop.call_soon(self._close_next_turn)

    def _close_next_turn(self) -> None:
        self.loop.call_soon(self._close)

    def leave(self, waiter: asyncio.Future[None]) -> None:
        self.waiters.discard(waiter)
        if not self.waiters and not self.woken:
            self._close()

    def _close(self) -> None:
        if self.fd < 0:
            return
        per_loop = _readers.get(self.loop)
        if per_loop is not None and per_loop.get(self.key) is self:
            del per_loop[self.key]
            if not per_loop:
                del _readers[self.loop]
        try:
            self.loop.remove_reader(self.fd)
        except (RuntimeError, ValueError, OSError):
            pass  # the loop is closed
        os.close(self.fd)
        self.fd = -1


# Per loop, per token: the registration its waiters share. Only the loop's own
# thread touches its entry; an entry goes with its last waiter.
_readers: dict[asyncio.AbstractEventLoop, dict[int, _Reader]] = {}
_no_add_reader: set[type[asyncio.AbstractEventLoop]] = set()


async def wait_token(token: StopToken, is_stopped: Callable[[], bool],
                     timeout: float | None, *, shared: bool) -> bool:
    """``token.wait`` for coroutines: True once stopped, False after ``timeout`` seconds.

    ``is_stopped`` reads the token's shared state itself: its ``stopped``
    attribute learns of a stop made in another process a moment later.
    """
    if is_stopped():
        return True
    if timeout is not None and timeout <= 0:
        return False
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[None] = loop.create_future()
    leave = _join(loop, token, waiter, shared)
    timer = None if timeout is None else WaitTimer(loop, waiter, timeout)
    try:
        if not is_stopped():  # it may have stopped before the registration
            await waiter
    finally:
        leave()
        if timer is not None:
            timer.cancel()
    return is_stopped()


def _join(loop: asyncio.AbstractEventLoop, token: StopToken, waiter: asyncio.Future[None],
          shared: bool) -> Callable[[], object]:
    """Register ``waiter`` to be woken by the stop; returns how to unregister it."""
    if shared and type(loop) not in _no_add_reader:
        per_loop = _readers.get(loop)
        if per_loop is None:
            per_loop = _readers[loop] = {}
        key = id(token)
        reader = per_loop.get(key)
        if reader is None:
            try:
                reader = per_loop[key] = _Reader(loop, token, key)
            except NotImplementedError:
                _no_add_reader.add(type(loop))
                reader = None
            if not per_loop:
                del _readers[loop]
        if reader is not None:
            reader.waiters.add(waiter)
            return lambda: reader.leave(waiter)
    handle = token.on_stop(lambda: _wake_threadsafe(loop, waiter))
    return handle.cancel


def call_soon_from_any_thread(loop: asyncio.AbstractEventLoop, fn: Callable[..., object],
                              *args: object) -> None:
    """``loop.call_soon`` from its own thread, else ``call_soon_threadsafe``; never raises.

    A stop often starts on the loop's own thread (a scope's exit, a task's
    failure) and fans out to many tokens: there the self-pipe write that
    ``call_soon_threadsafe`` costs (a system call, ~10 us here) per token is
    pure waste. A closed loop is ignored: nothing there will run again.
    """
    try:
        if asyncio_events._get_running_loop() is loop:
            loop.call_soon(fn, *args)
        else:
            loop.call_soon_threadsafe(fn, *args)
    except RuntimeError:
        pass


def _wake_threadsafe(loop: asyncio.AbstractEventLoop, waiter: asyncio.Future[None]) -> None:
    call_soon_from_any_thread(loop, _wake, waiter)


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class WaitTimer:
    """``call_later`` for any finite delay (a huge one is honoured by re-arming)."""

    __slots__ = ("_deadline", "_handle", "_loop", "_waiter")

    def __init__(self, loop: asyncio.AbstractEventLoop, waiter: asyncio.Future[None],
                 delay: float) -> None:
        self._loop, self._waiter = loop, waiter
        self._deadline = loop.time() + delay
        self._handle = loop.call_later(min(delay, _MAX_TIMER), self._fire)

    def _fire(self) -> None:
        remaining = self._deadline - self._loop.time()
        if remaining > 0:
            self._handle = self._loop.call_later(min(remaining, _MAX_TIMER), self._fire)
        else:
            _wake(self._waiter)

    def cancel(self) -> None:
        self._handle.cancel()


class TaskCanceller:
    """Cancel ``task`` (on its loop) when ``token`` stops, until ``disarm()``."""

    __slots__ = ("_handle", "_loop", "_task", "armed", "cancelled", "reason")

    def __init__(self, token: StopToken, task: asyncio.Task[object],
                 loop: asyncio.AbstractEventLoop) -> None:
        self._task, self._loop = task, loop
        self.armed = True
        self.cancelled = False  # whether we called task.cancel()
        self.reason: str | None = None
        token_ref = weakref.ref(token)  # the token's callback must not hold the token

        def on_stop() -> None:
            stopped = token_ref()
            self._request(stopped.reason if stopped is not None else None)

        self._handle: _Handle | None = token.on_stop(on_stop)

    def _request(self, reason: str | None) -> None:
        """In the stopping thread: hand the cancel to the loop."""
        self.reason = reason
        call_soon_from_any_thread(self._loop, self._cancel)

    def _cancel(self) -> None:
        if self.armed and not self.cancelled and not self._task.done():
            self.cancelled = True
            self._task.cancel(msg=self.reason)

    def disarm(self) -> bool:
        """Stop cancelling; True if a cancel was made (the caller should ``uncancel``)."""
        self.armed = False
        handle, self._handle = self._handle, None
        if handle is not None:
            handle.cancel()
        return self.cancelled
