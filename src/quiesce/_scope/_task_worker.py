"""TaskWorker: an asyncio task owned by a Scope (``scope.task(coro)``).

To the scope a task is one more worker, so the same ladder, report and
error rules apply; what each rung means differs:

1. the token stops: the task is cancelled. The cancel is handed to the
   task's loop (``call_soon_threadsafe``) from whatever thread stopped the
   token — at once, in that thread, not after the ladder thread starts, so
   a scope of tasks ends as fast as an ``asyncio.TaskGroup``;
2. after ``grace``, a task still running has swallowed its cancellation:
   it is cancelled once more and *abandoned* (reported, no longer waited
   for), so it never holds its scope beyond the grace;
3. there is nothing to kill: ``kill_after`` does not apply to tasks.

The task runs in a copy of the creator's context in which
``current_token()`` is its own token (a child of the scope's), so scopes,
threads and processes it starts nest below it. That token is local to the
process, like a pool task's: stopping 100 of them costs no system call
(an eventfd write is ~10 us here); pass ``token.child()`` to a process.

A scope whose live workers are all tasks takes them through these steps
on the loop itself when its block ends (``end_on_loop``), before its token
stops and its ladder thread starts: otherwise every task's end would wake
that thread, which holds the scope's lock while it waits for the GIL, and
the loop and the ladder would trade the lock once per task (~8x slower than
an ``asyncio.TaskGroup`` for 100 tasks; see bench/bench_aio.py).

Rejected: waiting for the ladder thread to send the first cancel (one
thread hand-off more per scope exit); ``task.cancel()`` from a foreign
thread (asyncio is not thread-safe); cancelling an abandoned task again
and again (a task that swallows one cancel swallows the next).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
import time
import weakref
from collections.abc import Callable, Coroutine
from typing import Any

from quiesce._core._async_wait import call_soon_from_any_thread
from quiesce._core._context import _current
from quiesce._core._ended_by import EndedBy
from quiesce._core._errors import Stopped
from quiesce._scope._worker import Owner, Worker

log = logging.getLogger("quiesce")


class TaskWorker(Worker):
    kind = "task"

    def __init__(self, owner: Owner, name: str, coro: Coroutine[Any, Any, Any],
                 loop: asyncio.AbstractEventLoop) -> None:
        # A local token (no fd, no system call to stop it): a task never leaves its
        # process; scopes and processes it starts get shared children of it.
        super().__init__(owner, name, owner.token._child_local())
        self._loop = loop
        self._coro: Coroutine[Any, Any, Any] | None = coro
        self.task: asyncio.Task[Any] | None = None
        self._cancels = 0  # cancels requested: the first on stop, one more at grace
        self._cancel_lock = threading.Lock()
        self._ended_hook: Callable[[], None] | None = None  # end_on_loop's count

    @property
    def alive(self) -> bool:
        """Running and not abandoned: an abandoned task holds up neither join nor exit."""
        return not self._done.is_set() and self._ended_by != "abandoned"

    def _start(self) -> None:
        coro, self._coro = self._coro, None
        assert coro is not None
        context = contextvars.copy_context()
        context.run(_current.set, self._token)
        self.task = self._loop.create_task(coro, name=self._name, context=context)
        self.task.add_done_callback(self._on_done)
        ref = weakref.ref(self)  # the token must not keep its worker alive
        self._token.on_stop(lambda: _call_weak(ref))

    def _close_unstarted(self) -> None:
        """The scope refused to start us: close the coroutine (no "never awaited" warning)."""
        if self._coro is not None:
            self._coro.close()
            self._coro = None

    # -- the ladder ------------------------------------------------------------------
    def _on_stop_requested(self) -> None:
        self._request_cancel(1)

    def _terminate(self) -> None:
        """After grace the task still runs: it swallowed the cancel. Abandon it."""
        if self._done.is_set():
            return
        self._request_cancel(2)
        self._abandon()

    def _abandon(self) -> None:
        if self._done.is_set() or self._ended_by == "abandoned":
            return
        self._ended_at = self._ended_at or time.monotonic()
        self._ended_by = "abandoned"
        self._owner.worker_changed()

    def _wait_ended(self, timeout: float | None) -> bool:
        return not self.alive  # nothing to reap: never wait

    def _request_cancel(self, nth: int) -> None:
        """Send the ``nth`` cancel once, to the task's loop, from any thread."""
        with self._cancel_lock:
            if self._cancels >= nth:
                return
            self._cancels = nth
        if self._loop.is_closed():  # it will never run again: nothing to wait for
            self._abandon()
            return
        call_soon_from_any_thread(self._loop, self._cancel)

    def _cancel(self) -> None:
        task = self.task
        if task is not None and not task.done():
            task.cancel(msg=self._token.reason)

    # -- the ending ------------------------------------------------------------------
    def _on_done(self, task: asyncio.Task[Any]) -> None:
        outcome: tuple[EndedBy, Any, BaseException | None]
        if task.cancelled():
            outcome = ("stopped", None, None)
        else:
            exc = task.exception()
            if exc is None:
                outcome = ("stopped" if self._token.stopped else "finished", task.result(), None)
            elif isinstance(exc, Stopped):
                outcome = ("stopped", None, None)
            else:
                outcome = ("failed", None, exc)
        self._finish(*outcome)
        if self._ended_hook is not None:
            self._ended_hook()


async def end_on_loop(workers: list[TaskWorker], grace: float, reason: str,
                      hurry: asyncio.Future[None]) -> None:
    """The ladder of a scope of tasks, on the loop: cancel, wait ``grace``, abandon.

    ``hurry`` ends the wait early (a second signal).
    """
    loop = asyncio.get_running_loop()
    all_done: asyncio.Future[None] = loop.create_future()
    running = [w for w in workers if w.task is not None and not w.task.done()]
    left = [len(running)]

    def one_done() -> None:
        left[0] -= 1
        if left[0] == 0 and not all_done.done():
            all_done.set_result(None)

    for worker in running:
        worker._ended_hook = one_done  # not a second done callback: one call_soon per task
    for worker in workers:
        worker._cancels = 1  # cancelled right here, not through a call_soon
        worker._token.stop(reason)
        worker._cancel()
    try:
        if running:
            await asyncio.wait([all_done, hurry], timeout=grace,
                               return_when=asyncio.FIRST_COMPLETED)
    finally:
        for worker in running:
            worker._ended_hook = None
    stuck = [w for w in workers if w.alive]
    for worker in stuck:  # _terminate's steps, the cancel made right here
        worker._cancels = 2
        worker._cancel()
        worker._abandon()
    if stuck:
        log.warning("quiesce: abandoned tasks still running: %s",
                    ", ".join(w.name for w in stuck))


def _call_weak(ref: weakref.ref[TaskWorker]) -> None:
    worker = ref()
    if worker is not None:
        worker._request_cancel(1)
