"""ThreadPool: a ThreadPoolExecutor whose tasks can be cancelled, timed out and stopped.

Each task runs with a token of its own (``StopToken._local()``: ~0.5 us,
no fd) as ``current_token()``. Cancelling or timing out a running task
resolves its future at once and stops its token; a task still running
``grace`` seconds later is *abandoned*: its thread (a daemon) is left to
finish alone, no longer counted, and a new thread takes its place, so the
pool keeps serving. ``stop()`` does the same to every running task.

The hot path is kept as lean as the stdlib's: one SimpleQueue, threads
started on demand up to ``max_workers``, one lock taken per task start
and end. Threads are daemons: the stdlib's non-daemon workers are what
makes a stuck task hang interpreter exit.
"""

from __future__ import annotations

import logging
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import InvalidStateError, ThreadPoolExecutor
from contextvars import Context
from functools import partial
from typing import Any, TypeVar, final

from quiesce._core._context import OUTSIDE, _current
from quiesce._core._token import StopToken
from quiesce._pools._pool_base import Pool, Task
from quiesce._pools._pool_futures import TaskFuture
from quiesce._pools._timer import Timer
from quiesce._proc._wants_token import wants_token

T = TypeVar("T")
log = logging.getLogger("quiesce")


class _WorkerThread:
    __slots__ = ("abandoned", "current", "task", "thread", "token")

    def __init__(self) -> None:
        self.current: StopToken | None = None  # the token this thread's context holds
        self.abandoned = False
        self.task: Task | None = None
        self.thread: threading.Thread | None = None
        self.token: StopToken | None = None  # reused by the next task while unused


def _in_own_context(call: partial[Any], token: StopToken, args: tuple[Any, ...],
                    kwargs: dict[str, Any]) -> tuple[Callable[..., Any], tuple[Any, ...],
                                                     dict[str, Any]]:
    """``partial(context.run, fn, ...)`` (asyncio.to_thread) runs in its caller's copied
    context, where our ``_current.set`` is not seen: set the task's token inside it."""
    return call.func, (_call_with_token, token, *call.args, *args), {**call.keywords, **kwargs}


def _call_with_token(token: StopToken, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    _current.set(token)  # inside a context copied for this one call (asyncio.to_thread)
    return fn(*args, **kwargs)


@final
class ThreadPool(Pool, ThreadPoolExecutor):
    """`concurrent.futures.ThreadPoolExecutor`, plus stoppable tasks.

    A drop-in executor (`submit`, `map`, `shutdown`, `with`) whose tasks
    each run with their own token (`quiesce.current_token()`), and whose
    futures can be cancelled while running or timed out: the task's token
    is stopped, and a task that ignores it for `grace` seconds is
    *abandoned* (its thread finishes alone, uncounted) and replaced, so the
    pool keeps serving. Python cannot kill a thread: a task that never
    looks at its token keeps its thread busy until it returns.

    Its threads are daemons, so a stuck task never blocks interpreter exit;
    `shutdown(wait=True)` (and leaving a `with` block) still waits for
    running tasks, as the stdlib's does; `stop()` is the bounded end. The
    pool belongs to the token current where it is made: when that token
    stops (a scope, a signal under `handle_signals`), the pool stops too.
    Use `Scope.thread_pool` to have a scope own it.

    It *is* a `ThreadPoolExecutor` (a subclass that shares none of its
    machinery), so APIs that insist on one take it: with
    `loop.set_default_executor(quiesce.ThreadPool())`, cancelling an
    `asyncio.to_thread` or `run_in_executor` call that already runs stops
    its task's token (`current_token()` inside the call).

    Args:
        max_workers: Threads at most; None: `min(32, os.cpu_count() + 4)`.
        task_timeout: Seconds each task may run (from its start) before its
            future fails with `TimeoutError` and the task is stopped; None:
            no limit. `submit_with` overrides it per call.
        grace: Seconds a stopped task is given before it is abandoned;
            finite, >= 0.
        kill_after: Kept for the same signature as `ProcessPool` (threads
            cannot be killed); finite, >= 0.
        thread_name_prefix: Prefix of the worker threads' names.

    Raises:
        ValueError: `max_workers` < 1; `task_timeout` <= 0 or not finite;
            `grace` or `kill_after` negative, NaN or infinite.

    Example:
        ```python
        import quiesce

        def fetch(url):
            token = quiesce.current_token()
            while not token.stopped:
                ...                          # a unit of work

        with quiesce.ThreadPool(8, task_timeout=30, grace=2) as pool:
            futures = [pool.submit(fetch, u) for u in urls]
            futures[0].cancel()              # works on a running task
        ```
    """

    kind = "thread"

    def __init__(self, max_workers: int | None = None, *, task_timeout: float | None = None,
                 grace: float = 5.0, kill_after: float = 2.0,
                 thread_name_prefix: str = "") -> None:
        super().__init__(max_workers, task_timeout, grace, kill_after)
        self._queue: queue.SimpleQueue[Task | None] = queue.SimpleQueue()
        self._workers: set[_WorkerThread] = set()
        self._idle = threading.Semaphore(0)  # as the stdlib's: released by a worker going idle
        self._prefix = thread_name_prefix or f"ThreadPool-{id(self):x}"
        self._timer_obj: Timer | None = None
        self._stop_hook = self._stop_running  # one bound method, not one per task
        self._wants_token: dict[Any, bool] = {}
        self._stopping = False
        self._link_above()

    # -- Executor ---------------------------------------------------------------------------
    def _submit(self, fn: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any],
                timeout: float | None) -> TaskFuture[T]:
        if not callable(fn) or self._shutdown:
            self._check_submit(fn)  # raises the right error
        task = Task(fn, args, kwargs, timeout)
        task.future._stop_running = self._stop_hook
        self._queue.put(task)
        if self._shutdown:  # raced with shutdown(): it may sit behind the exit sentinels
            task.future.cancel()
            self._check_submit(fn)
        if not self._idle.acquire(timeout=0) and len(self._workers) < self._max_workers:
            with self._lock:
                if len(self._workers) < self._max_workers:
                    self._add_worker()
        return task.future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """As `ThreadPoolExecutor.shutdown`: no new work; optionally wait for running tasks.

        `wait=True` waits for running tasks however long they take (use
        `stop()` for a bounded end). Called from one of the pool's own tasks
        or callbacks, it does not wait for that calling thread.

        Args:
            wait: Wait until running (and, unless cancelled, queued) tasks end.
            cancel_futures: Cancel the tasks that have not started.
        """
        with self._lock:
            self._shutdown = True
            if cancel_futures:
                self._cancel_queued()
            workers = list(self._workers)
            for _ in workers:
                self._queue.put(None)
        if wait:
            me = self._own_worker()  # a task or done-callback of ours: it cannot wait for itself
            others = [w for w in workers if w is not me]
            self._wait_until(lambda: not any(w in self._workers for w in others), None)
            if self._timer_obj is not None:
                self._timer_obj.close()
            self._unlink_above()

    def _stop(self, grace: float) -> None:
        with self._lock:
            self._shutdown = self._stopping = True  # set before the snapshot: see _run
            self._cancel_queued()
            running = list(self._running)
            for _ in self._workers:
                self._queue.put(None)
        for future in running:
            future.cancel()  # stops its token
        me = self._own_worker()
        mine = me.task if me is not None else None  # stopped, but it is running this very call
        own = {mine.future} if mine is not None else set()
        self._wait_until(lambda: not self._running.keys() - own, grace)
        with self._lock:
            stuck = [task for task in self._running.values() if task is not mine]
        for task in stuck:
            task.future.cancel()  # no-op unless it started as we stopped
            self._abandon(task, replace=False)
        if self._timer_obj is not None:
            self._timer_obj.close()

    def _hurry(self, sig: int) -> None:
        """Threads cannot be signalled: at the ladder's last step, abandon what still runs."""
        if sig == signal.SIGKILL:
            with self._lock:
                stuck = list(self._running.values())
            for task in stuck:
                task.future.cancel()  # an abandoned task's future must not stay RUNNING
                self._abandon(task, replace=False)

    # -- workers ------------------------------------------------------------------------------
    def _own_worker(self) -> _WorkerThread | None:
        """The worker whose thread calls (a task or a done-callback), else None."""
        me = threading.current_thread()
        with self._lock:
            return next((w for w in self._workers if w.thread is me), None)

    def _add_worker(self) -> None:
        worker = _WorkerThread()
        worker.thread = threading.Thread(target=self._work, args=(worker,), daemon=True,
                                         name=f"{self._prefix}_{len(self._workers)}")
        self._workers.add(worker)
        worker.thread.start()

    def _work(self, worker: _WorkerThread) -> None:
        get, empty, release = self._queue.get, self._queue.empty, self._idle.release
        try:
            while True:
                task = get()
                if task is None:
                    return
                self._run(task, worker)
                if worker.abandoned:
                    return
                if empty():  # about to wait: count as idle (the stdlib counts every task)
                    release()
        finally:
            with self._lock:
                self._workers.discard(worker)
                self._changed.notify_all()

    def _run(self, task: Task, worker: _WorkerThread) -> None:
        """Run one task. Kept inline and lean: this is the pool's whole per-task cost."""
        future = task.future
        if not future.set_running_or_notify_cancel():
            self._end_task(task)  # cancelled while queued
            return
        token = worker.token or StopToken._local()
        worker.token = task.token = token
        token._deadline = task.deadline  # submitted in a deadline block (the future ends then)
        worker.task, task.worker = task, worker
        fn, args, kwargs = task.fn, task.args, task.kwargs
        task.args = task.kwargs = None  # type: ignore[assignment]
        task.started = time.monotonic()
        self._running[future] = task  # one dict op: atomic under the GIL, no lock needed
        if task.timeout is not None or task.deadline is not None:
            self._arm_timeout(task)
        if type(fn) is partial and type(getattr(fn.func, "__self__", None)) is Context:
            fn, args, kwargs = _in_own_context(fn, token, args, kwargs)
        else:
            wants = self._wants_token.get(fn)
            if wants is None:
                wants = self._learn_wants_token(fn)
            if wants and "token" not in kwargs:
                kwargs = {**kwargs, "token": token}
        if worker.current is not token:  # the thread keeps its context between tasks
            _current.set(token)
            worker.current = token
        try:
            if self._stopping:  # read after the insert: stop() saw this task, or we see this
                future.cancel()
                return
            result = fn(*args, **kwargs)
        except BaseException as exc:  # Stopped too: the future tells, as the stdlib's would
            try:
                future.set_exception(exc)
            except InvalidStateError:
                pass  # cancelled or timed out meanwhile
        else:
            try:
                future.set_result(result)
            except InvalidStateError:
                pass
            del result
        finally:
            del fn, args, kwargs
            worker.task = task.token = None
            self._running.pop(future, None)
            if self._watchers or self._idle_hooks:
                self._notify_task_end()
        # The next task may reuse the token if nobody else saw it: not stopped, no
        # callback, no reference kept (worker.token, worker.current, the thread's
        # context var, ``token`` and getrefcount's own: 5).
        # A new one costs ~0.5 us, about 5% of the stdlib's whole per-task time.
        if token.stopped or token._callbacks or sys.getrefcount(token) > 5:
            worker.token = worker.current = None
            _current.set(OUTSIDE)

    def _learn_wants_token(self, fn: Callable[..., Any]) -> bool:
        wants = wants_token(fn)
        if len(self._wants_token) < 256:
            try:
                self._wants_token[fn] = wants
            except TypeError:  # unhashable callable
                pass
        return wants

    def _stop_running(self, future: TaskFuture[Any], reason: str) -> None:
        """A running task was cancelled or timed out: stop its token; abandon it after grace."""
        task = self._running.get(future)
        if task is None or task.token is None:
            return
        task.token.stop(reason)
        if self._stopping:
            return  # stop() abandons what still runs after its grace
        self._timer().call_at(time.monotonic() + self._grace,
                              lambda: self._abandon(task, replace=True))

    def _abandon(self, task: Task, *, replace: bool) -> None:
        with self._lock:
            worker = task.worker
            if self._running.get(task.future) is not task or worker.task is not task \
                    or worker.abandoned:
                return
            worker.abandoned = True
            worker.token = None
            self._note_ending("abandoned")
            self._workers.discard(worker)
            self._running.pop(task.future, None)
            self._changed.notify_all()
            if replace and not self._shutdown and not self._queue.empty():
                self._add_worker()
        log.warning("quiesce: %s abandoned thread %r, still running %s", type(self).__name__,
                    worker.thread.name if worker.thread else "?", task.describe())

    def _cancel_queued(self) -> None:
        while True:
            try:
                task = self._queue.get_nowait()
            except queue.Empty:
                return
            if task is not None:
                task.future.cancel()

    def _queue_empty(self) -> bool:
        return self._queue.empty()

    def _timer(self) -> Timer:
        with self._lock:
            if self._timer_obj is None:
                self._timer_obj = Timer(f"{self._prefix}-timer")
            return self._timer_obj
