"""The asyncio side of Scope: `async with`, `scope.task()`, waiting off the loop.

A mixin, so that ``Scope`` stays one class (one token, one ladder, one
report) while its asyncio half lives apart and imports asyncio only when a
program uses it (``quiesce run`` must start fast).

- ``async with``: the block's body task is guarded by a ``TaskCanceller``
  on the scope's token: a stop the block did not cause (a failure,
  ``scope.stop()``, a stop from above) cancels the body, and the exit turns
  that cancellation back into what caused it (the error, ``Stopped``, or
  nothing after ``scope.stop()``), telling our cancel from anyone else's by
  ``Task.uncancel()``'s count, as ``asyncio.timeout`` does.
- Leaving stops the token, whose ladder runs in its thread as for ``with``;
  the exit *awaits* its end: each worker's end and the ladder's end wake
  the coroutines waiting in ``_until`` through the loop (``call_soon``
  from the loop's own thread, ``call_soon_threadsafe`` from others).
- A scope whose live workers are all tasks ends them on the loop before
  its token stops, and then needs no ladder thread (see _task_worker).

Rejected: ``loop.run_in_executor(None, ladder_done.wait)`` (a thread of the
default executor per exit, and that executor may be the one being shut
down); polling ``ladder_done`` (latency or CPU).
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Self

from quiesce._core._context import CurrentReset
from quiesce._core._token import StopToken
from quiesce._scope._worker import Owner, Worker

if TYPE_CHECKING:  # asyncio is imported only by programs that use it
    import asyncio

    from quiesce._core._async_wait import TaskCanceller
    from quiesce._scope._task_worker import CancelBatch, TaskWorker

_Waiters = list[tuple["asyncio.AbstractEventLoop", "asyncio.Future[None]"]]


class AsyncScope:
    """What ``Scope`` adds for asyncio; see ``Scope.task`` and ``Scope.__aenter__``."""

    # Scope's own state, used here (set by Scope.__init__).
    name: str
    _token: StopToken
    _grace: float
    _lock: threading.RLock
    _changed: threading.Condition
    _running: set[Worker]
    _solo_ladders: int
    _hurry: threading.Event
    _ladder_done: threading.Event
    _ladder_started: bool
    _ladder_inline: bool
    _workers: list[Worker]
    _owner: Owner
    _worker_ids: itertools.count[int]
    _context_token: CurrentReset | None

    def _init_async(self) -> None:
        # async with: the loop it was entered on, what cancels its body, who awaits changes
        self._loop: asyncio.AbstractEventLoop | None = None
        self._body_canceller: TaskCanceller | None = None
        self._task_cancels: CancelBatch | None = None  # hands tasks' cancels to the loop
        self._tasks: list[TaskWorker] = []  # the workers that are tasks, in start order
        self._async_waiters: _Waiters = []
        self._hurry_waiters: _Waiters = []
        # Workers whose end the scope has taken in (their error recorded): a worker's
        # `alive` turns False a moment before that, in the worker's own thread.
        self._reported: set[Worker] = set()

    # -- Scope's own, used here ------------------------------------------------------
    def __enter__(self) -> Any:
        raise NotImplementedError

    def _adopt(self, worker: Worker) -> Worker:
        raise NotImplementedError

    def _begin_exit(self, exc: BaseException | None) -> BaseException | None:
        raise NotImplementedError

    def _run_ladder_if_pending(self) -> None:
        raise NotImplementedError

    def _end_exit(self, exc: BaseException | None,
                  body_error: BaseException | None) -> Literal[False]:
        raise NotImplementedError

    # -- tasks -----------------------------------------------------------------------
    def _start_task(self, coro: Coroutine[Any, Any, Any],
                    name: str | None) -> asyncio.Task[Any]:
        """``Scope.task``."""
        import asyncio

        from quiesce._scope._task_worker import TaskWorker

        if not asyncio.iscoroutine(coro):
            hint = " (call the async function: scope.task(fn(...)))" if callable(coro) else ""
            raise TypeError(f"coro must be a coroutine object, got {type(coro).__name__}{hint}")
        if name is not None and not isinstance(name, str):
            coro.close()
            raise TypeError(f"name must be a str or None, not {type(name).__name__}")
        try:
            loop = asyncio.get_running_loop()
            if self._loop is None:
                raise RuntimeError(f"scope.task() needs a scope entered with `async with`; "
                                   f"scope {self.name!r} was not")
            if loop is not self._loop or self._task_cancels is None:
                raise RuntimeError(f"scope.task() must be called on the loop that entered "
                                   f"scope {self.name!r}")
            label = name or getattr(coro, "__qualname__", None) or type(coro).__name__
            worker = TaskWorker(self._owner, f"{self.name}/{label}-{next(self._worker_ids)}",
                                coro, loop, self._task_cancels)
        except BaseException:
            coro.close()
            raise
        try:
            self._adopt(worker)
        except BaseException:
            worker._close_unstarted()
            raise
        with self._lock:
            self._tasks.append(worker)
        assert worker.task is not None
        return worker.task


    async def __aenter__(self) -> Self:
        """`async with`: as `with`, plus tasks (`task()`) and a cancellable body.

        While the block runs, a stop of the scope that the block did not
        cause (a task or worker failed, `scope.stop()`, a stop from above
        such as a signal under `quiesce.aio.run`) cancels the body; leaving
        then raises the failure, or `Stopped`, instead of the cancellation
        (after `scope.stop()`, nothing: the block just ends). Leaving waits
        for the ladder without blocking the loop.
        """
        import asyncio

        from quiesce._core._async_wait import TaskCanceller
        from quiesce._scope._task_worker import CancelBatch

        self.__enter__()
        self._loop = asyncio.get_running_loop()
        self._task_cancels = CancelBatch(self._loop)
        body = asyncio.current_task()
        if body is not None:
            self._body_canceller = TaskCanceller(self._token, body, self._loop)
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> bool:
        """Stop what still runs and wait for the ladder (off the loop: it keeps running)."""
        import asyncio

        canceller, self._body_canceller = self._body_canceller, None
        ours = False  # the body was cancelled by our stop, and by nothing else
        if canceller is not None and canceller.disarm():
            task = asyncio.current_task()
            if task is not None and task.uncancel() == 0 \
                    and isinstance(exc, asyncio.CancelledError):
                exc, ours = None, True  # the stop says why: a failure, or Stopped
        cancel = exc if isinstance(exc, asyncio.CancelledError) else None
        try:
            await self._end_tasks_first()
        except asyncio.CancelledError as again:
            cancel = cancel or again
        body_error = self._begin_exit(None if cancel is not None else exc)
        # As _wait_for_ladder: the ladder may be left to us (no thread could be
        # started) even after we looked, by a stop that another thread observed.
        while not self._ladder_done.is_set():
            self._run_ladder_if_pending()  # no thread could be started: run it here (blocking)
            try:
                await self._until(lambda: self._ladder_done.is_set() or self._ladder_inline)
            except asyncio.CancelledError as again:
                cancel = cancel or again  # cancelled from outside: end the ladder first
        self._end_exit(cancel or exc, body_error)  # the errors, else Stopped from above
        if cancel is not None and cancel is not exc:
            raise cancel
        return ours  # our own cancel, stopped by ``scope.stop()``: the block just ends

    async def _end_tasks_first(self) -> None:
        """Before the token stops: end tasks on the loop, and skip a needless ladder.

        If all that still runs is tasks, they are ended here (see
        _task_worker). Then, if every worker has ended (threads and tasks
        only: a process's tree, an idle pool still need their ladder), no
        ladder thread is started at all: that thread was most of the cost of
        a ``to_thread`` call or of leaving a scope of tasks.
        """
        import asyncio

        from quiesce._scope._task_worker import end_on_loop

        with self._lock:
            if self._ladder_started:
                return
            count = len(self._workers)
            tasks = list(self._tasks)
            others = [w for w in self._workers if w.kind != "task"] if count > len(tasks) else []
        if any(w.alive for w in others):
            return  # the ladder's work
        tasks_ended = not tasks
        if tasks:
            loop = asyncio.get_running_loop()
            done: asyncio.Future[None] = loop.create_future()  # a second signal resolves it
            entry = (loop, done)
            with self._lock:
                self._hurry_waiters.append(entry)
            try:
                if not self._hurry.is_set():
                    await end_on_loop(tasks, self._grace, f"scope {self.name!r} exited",
                                      done, self._record_ended)
                    tasks_ended = True  # or abandoned
            finally:
                with self._lock:
                    self._hurry_waiters.remove(entry)
        with self._lock:
            # Every task has ended or is abandoned; has anything new started since?
            if tasks_ended and not self._ladder_started and len(self._workers) == count \
                    and all(self._needs_no_ladder(w) for w in others):
                # _check_open refuses new workers from now on.
                self._ladder_started = True
                self._ladder_done.set()

    def _record_ended(self, ended: list[Worker]) -> None:
        """``Scope._worker_ended`` for a batch of tasks that did not fail: one lock, one wake.

        (``_reported`` is for errors and threads: a task that did not fail is taken
        in once it is not alive.)
        """
        with self._changed:
            self._running.difference_update(ended)
            if not self._running or self._solo_ladders:
                self._changed.notify_all()
        if self._async_waiters:
            self._wake_async()

    def _needs_no_ladder(self, worker: Worker) -> bool:
        """Ended for good, and taken in: a thread that returned, a task that ended or
        was abandoned. (A process's tree or an idle pool still needs the ladder.)"""
        if worker.kind == "thread":
            return worker in self._reported
        return worker.kind == "task" and not worker.alive

    async def _until_ended(self, worker: Worker) -> None:
        """Until the scope has taken in ``worker``'s end (and recorded its error)."""
        await self._until(lambda: worker in self._reported)

    async def _until(self, done: Callable[[], bool]) -> None:
        """Wait, without blocking the loop, until ``done()`` (a worker or ladder change)."""
        import asyncio

        loop = asyncio.get_running_loop()
        while not done():
            future: asyncio.Future[None] = loop.create_future()
            entry = (loop, future)
            with self._lock:
                self._async_waiters.append(entry)
            try:
                if done():  # changed before we registered: its wake-up is gone
                    return
                await future
            finally:
                with self._lock:
                    if entry in self._async_waiters:
                        self._async_waiters.remove(entry)

    def _wake_async(self) -> None:
        """Wake every coroutine awaiting ``_changed_async`` (from any thread)."""
        with self._lock:
            waiters, self._async_waiters = self._async_waiters, []
        if waiters:
            from quiesce._core._async_wait import call_soon_from_any_thread

            for loop, future in waiters:
                call_soon_from_any_thread(loop, _resolve, future)

    def _wake_hurried(self) -> None:
        """A second signal: wake what waits in ``_end_tasks_first``."""
        with self._lock:
            hurried = list(self._hurry_waiters)
        if hurried:
            from quiesce._core._async_wait import call_soon_from_any_thread

            for loop, future in hurried:
                call_soon_from_any_thread(loop, _resolve, future)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
