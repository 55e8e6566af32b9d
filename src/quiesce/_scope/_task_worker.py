"""TaskWorker: an asyncio task owned by a Scope (``scope.task(coro)``).

To the scope a task is one more worker, so the same ladder, report and
error rules apply; what each rung means differs:

1. the token stops: the task is cancelled. The cancel is handed to the
   task's loop from whatever thread stopped the token — at once, in that
   thread, not after the ladder thread starts — through the scope's
   ``CancelBatch``: one ``call_soon_threadsafe`` for every task a stop
   reaches, not one each (a self-pipe write, ~10 us, per task);
2. after ``grace``, a task still running has swallowed its cancellation:
   it is cancelled once more and *abandoned* (reported, no longer waited
   for), so it never holds its scope beyond the grace;
3. there is nothing to kill: ``kill_after`` does not apply to tasks.

The task runs in a copy of the creator's context in which
``current_token()`` is its own token, so scopes, threads and processes it
starts nest below it. That token is local to the process, like a pool
task's (no fd, no shared memory: stopping one costs no system call; pass
``token.child()`` to a process). It stops when the scope's token stops,
as a ``child()`` would, but without a link of its own: the scope stops
every worker's token itself (``Scope._begin_ladder``, and ``end_on_loop``
below), so ending 100 tasks is one pass over them, not 100 link callbacks
each reading the reason from shared memory. It shares the scope's
deadline, and its one ``on_stop`` callback cancels the task,
whoever stopped the token (the scope, ``worker.stop()``,
a deadline, the task itself).

A scope whose live workers are all tasks takes them through these steps
on the loop itself when its block ends (``end_on_loop``), before its token
stops, and needs no ladder at all: with a ladder thread, every task's end
woke it and the loop and the ladder traded the scope's lock once per task
(~8x an ``asyncio.TaskGroup`` for 100 tasks). There each token's callback
cancels its task right there (on the loop's thread: no hand-off) and the
ends are recorded in one batch under one lock. What remains per task
beyond a TaskGroup's work is the token's stop and its callback, about
1 us together on the bench machine, and the worker's bookkeeping (see
bench/bench_aio.py and docs/measurements.md).

Rejected: waiting for the ladder thread to send the first cancel (one
thread hand-off more per scope exit); ``task.cancel()`` from a foreign
thread (asyncio is not thread-safe); cancelling an abandoned task again
and again (a task that swallows one cancel swallows the next); a link
from the scope's token to each task's (a callback and a reason read per
task on every stop); cancelling in ``end_on_loop`` and then running the
token's callback for nothing (two passes over cold objects).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import threading
import time
import weakref
from collections.abc import Callable, Coroutine
from typing import Any

from quiesce._core._async_wait import WaitTimer, call_soon_from_any_thread
from quiesce._core._context import _current
from quiesce._core._ended_by import EndedBy
from quiesce._core._errors import Stopped
from quiesce._core._token import StopToken
from quiesce._scope._worker import Owner, Worker

log = logging.getLogger("quiesce")

_cancel_lock = threading.Lock()  # only for a cancel requested by two threads at once


class CancelBatch:
    """Hands cancels to one loop, any number of them per ``call_soon`` (from any thread)."""

    __slots__ = ("_lock", "_loop", "_pending", "thread")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.thread = threading.get_ident()  # the loop's: made on it, by `async with`
        self._lock = threading.Lock()
        self._pending: list[TaskWorker] = []

    def add(self, worker: TaskWorker) -> None:
        with self._lock:
            first = not self._pending
            self._pending.append(worker)
        if first:
            call_soon_from_any_thread(self._loop, self._run)

    def _run(self) -> None:
        with self._lock:
            batch, self._pending = self._pending, []
        for worker in batch:
            worker._cancel()


class TaskWorker(Worker):
    kind = "task"

    def __init__(self, owner: Owner, name: str, coro: Coroutine[Any, Any, Any],
                 loop: asyncio.AbstractEventLoop, cancels: CancelBatch) -> None:
        # A local token (no fd, no system call to stop it): a task never leaves its
        # process; scopes and processes it starts get shared children of it. Its
        # scope stops it (module docstring); it shares the scope's deadline.
        token = StopToken._local()
        token._deadline = owner.token.deadline
        self._cancels = 0  # cancels requested: the first on stop, one more at grace
        super().__init__(owner, name, token)
        self._loop = loop
        self._batch = cancels
        self._coro: Coroutine[Any, Any, Any] | None = coro
        self.task: asyncio.Task[Any] | None = None
        self._ending: _Ending | None = None  # set while end_on_loop waits for the task
        # Whoever stops the token, the task is cancelled (the token must not keep us alive).
        token.on_stop(functools.partial(_token_stopped, weakref.ref(self)))

    @property
    def alive(self) -> bool:
        """Running and not abandoned: an abandoned task holds up neither join nor exit."""
        return not self._done.flag and self._ended_by != "abandoned"

    def _start(self) -> None:
        coro, self._coro = self._coro, None
        assert coro is not None
        context = contextvars.copy_context()
        context.run(_current.set, self._token)
        self.task = self._loop.create_task(coro, name=self._name, context=context)
        self.task.add_done_callback(self._on_done)

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
        if self._cancels >= nth:  # only grows: no lock needed to see it
            return
        with _cancel_lock:
            if self._cancels >= nth:
                return
            self._cancels = nth
        if self._loop.is_closed():  # it will never run again: nothing to wait for
            self._abandon()
            return
        self._batch.add(self)

    def _cancel(self) -> None:
        task = self.task
        if task is not None and not task.done():
            task.cancel(msg=self._token.reason)

    # -- the ending ------------------------------------------------------------------
    def _on_done(self, task: asyncio.Task[Any]) -> None:
        ending = self._ending
        if ending is not None:
            self._ending = None
            if task.cancelled() and self._ended_by is None:
                # end_on_loop's cancel: recorded with the others (Worker._finish, batched)
                self._ended_at = time.monotonic()
                self._ended_by = "stopped"
                self._done.set()
                ending.ended.append(self)
                ending.one_done()
                return
        ended_by: EndedBy
        result: Any = None
        error: BaseException | None = None
        if task.cancelled():
            ended_by = "stopped"
        else:
            error = task.exception()
            if error is None:
                ended_by = "stopped" if self._token.stopped else "finished"
                result = task.result()
            elif isinstance(error, Stopped):
                ended_by, error = "stopped", None
            else:
                ended_by = "failed"
        self._finish(ended_by, result, error)
        if ending is not None:
            ending.one_done()


def _token_stopped(ref: weakref.ref[Any]) -> None:
    """A task's token stopped: cancel the task (on its loop)."""
    worker = ref()
    if worker is None or worker._cancels:
        return  # cancelled already
    if worker._ending is not None and threading.get_ident() == worker._batch.thread:
        # end_on_loop's stop, on the loop's thread: cancel right here, no batch
        worker._cancels = 1
        task = worker.task
        if task is not None:
            task.cancel(msg=worker._ending.reason)
    else:
        worker._request_cancel(1)


class _Ending:
    """end_on_loop's count of the tasks still running, and the ends it records itself."""

    __slots__ = ("done", "ended", "left", "reason")

    def __init__(self, done: asyncio.Future[None], left: int, reason: str) -> None:
        self.done, self.left, self.reason = done, left, reason
        self.ended: list[Worker] = []

    def one_done(self) -> None:
        self.left -= 1
        if not self.left and not self.done.done():
            self.done.set_result(None)


async def end_on_loop(workers: list[TaskWorker], grace: float, reason: str,
                      done: asyncio.Future[None],
                      record: Callable[[list[Worker]], None]) -> None:
    """The ladder of a scope of tasks, on the loop: stop and cancel, wait ``grace``, abandon.

    ``done`` resolves once every task has ended, or early (a second signal
    resolves it too). ``record(ended)`` takes in, in one batch, the ends of
    the tasks that ended by this cancel (the others report one by one).
    """
    ending = _Ending(done, 0, reason)
    running: list[TaskWorker] = []
    tokens: list[StopToken] = []
    for worker in workers:
        if not worker._done.flag and worker._ended_by != "abandoned":
            worker._ending = ending
            running.append(worker)
            tokens.append(worker._token)
        elif not worker._token.stopped:  # ended: what it left below still stops with us
            worker._cancels = max(worker._cancels, 1)  # nothing to cancel
            tokens.append(worker._token)
    ending.left = len(running)
    timer = WaitTimer(asyncio.get_running_loop(), done, grace) if running else None
    try:
        for token in tokens:
            token.stop(reason)  # its callback cancels its task (_token_stopped)
        if running:
            await done
    finally:
        if timer is not None:
            timer.cancel()
        if ending.left > 0:
            for worker in running:
                worker._ending = None
        if ending.ended:
            record(ending.ended)
    if ending.left <= 0:
        return
    stuck = [w for w in running if w.alive]
    for worker in stuck:  # _terminate's steps, the cancel made right here
        worker._cancels = 2
        worker._cancel()
        worker._abandon()
    if stuck:
        log.warning("quiesce: abandoned tasks still running: %s",
                    ", ".join(w.name for w in stuck))
