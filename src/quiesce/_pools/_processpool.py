"""ProcessPool: a ProcessPoolExecutor whose tasks can be cancelled, timed out and stopped.

Design. Each worker process has two pipes: a duplex *task* pipe (one task
out, its outcome back) and a one-way *control* pipe (stop requests, read
by a listener thread in the worker; see _pool_process_main). One
*dispatcher* thread in the owner waits on every task pipe, every worker's
exit (a pidfd, else its sentinel) and a wake-up pipe written by
``submit``; it hands the next task to an idle worker, resolves futures,
and handles deaths. A worker holds one task at a time, so "running" means
running: a cancel, a timeout or a death concerns exactly that task.

Ending a running task (cancel, timeout, ``stop``): its future is resolved
at once, its token is stopped through the control pipe; if the worker is
still on that task ``grace`` later it gets SIGTERM (``Stopped`` raised in
the task), ``kill_after`` later SIGKILL, and a new worker replaces it. A
worker that dies on its own fails only its task's future (``ProcessDied``).
Workers are started lazily up to ``max_workers``, from the launcher thread
(PDEATHSIG), and registered with the guardian: none outlives the owner.
Each worker process's life (start, group, pidfd, guardian, reap, remains,
signals) is one ``ProcessHandle`` (_proc/_handle): a worker is never
signalled through a number that could have been recycled.
"""

from __future__ import annotations

import collections
import itertools
import logging
import multiprocessing.connection
import os
import pickle
import selectors
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from multiprocessing.context import BaseContext
from typing import Any, TypeVar, final

from quiesce._core._errors import ProcessDied
from quiesce._core._main_wait import in_slices
from quiesce._core._token import StopToken
from quiesce._pools._pool_base import Pool, Task
from quiesce._pools._pool_futures import TaskFuture, resolve
from quiesce._pools._pool_process_main import worker_main
from quiesce._pools._timer import Timer
from quiesce._proc import _proctree
from quiesce._proc._child import RemoteTraceback
from quiesce._proc._handle import ProcessHandle
from quiesce._proc._mp_context import resolve_context
from quiesce._proc._pickling import pickle_target

T = TypeVar("T")
log = logging.getLogger("quiesce")
Connection = multiprocessing.connection.Connection
_ids = itertools.count(1)


class _Worker:
    """The owner's view of one worker process."""

    def __init__(self, pool: ProcessPool, number: int) -> None:
        self.name = f"{pool._name}-worker-{number}"
        self.tag = _proctree.new_tag()
        self.tasks, child_tasks = pool._ctx.Pipe(duplex=True)
        child_control, self.control = pool._ctx.Pipe(duplex=False)
        self.process = pool._ctx.Process(  # type: ignore[attr-defined]
            target=worker_main, name=self.name,
            args=(child_tasks, child_control, pool._token, self.tag, os.getpid()))
        try:
            self.handle = ProcessHandle.start_process(self.process, self.tag)
        except BaseException:
            self.close_pipes()
            raise
        finally:
            child_tasks.close()
            child_control.close()
        self.pid: int = self.handle.pid
        self.exit_fd: Any = self.handle.exit_fd
        self.task: Task | None = None
        self.task_id = 0
        self.dead = False
        self.send_lock = threading.Lock()  # control messages come from any thread

    def signal(self, sig: int) -> None:
        """Signal the process (its pidfd, or its PID while unreaped: never a stranger)."""
        if sig == signal.SIGKILL:
            self.handle.kill_tree()  # stopped first, its own children before it
        else:
            self.handle.signal(sig)

    def request_stop(self, task_id: int, reason: str) -> None:
        with self.send_lock:
            try:
                self.control.send(("stop", task_id, reason))
            except (OSError, ValueError):
                pass  # gone, or closed by the dispatcher

    def say_goodbye(self) -> None:
        """Ask an idle worker to exit. EOF alone is not enough: under fork, later
        workers inherit this pipe's owner end, so it never reads as closed."""
        try:
            self.tasks.send_bytes(b"")
        except (OSError, ValueError):
            pass  # already gone

    def close_pipes(self) -> None:
        for conn in (self.tasks, self.control):
            conn.close()


@final
class ProcessPool(Pool):
    """`concurrent.futures.ProcessPoolExecutor`, plus stoppable tasks.

    A drop-in executor (`submit`, `map`, `shutdown`, `with`) in which each
    worker process runs one task at a time, so "running" is exact: a
    cancel, a timeout or a crash concerns that task and no other.

    - `future.cancel()` on a running task ends the future cancelled at once
      and stops the task's token; a task still running `grace` seconds
      later gets SIGTERM (`Stopped` raised in it, so its `finally` runs),
      then SIGKILL after `kill_after`, and a new worker takes its place.
    - `task_timeout` (or `submit_with(timeout=)`) ends a task the same way,
      its future failing with `TimeoutError`.
    - A worker that dies (segfault, `os._exit`, OOM kill) fails only its
      own task's future with `ProcessDied` and is replaced.
    - No worker outlives the owner, even if the owner is SIGKILLed.

    Like `ThreadPool`, it belongs to the token current where it is made,
    and `Scope.process_pool` makes one a scope owns.

    Args:
        max_workers: Processes at most, started on demand; None:
            `os.cpu_count()`.
        task_timeout: Seconds each task may run (from its start); None: no
            limit.
        grace: Seconds between a task's stop and SIGTERM; finite, >= 0.
        kill_after: Seconds between SIGTERM and SIGKILL; finite, >= 0.
        mp_context: A start method name (`"fork"`, `"forkserver"`,
            `"spawn"`), a `multiprocessing` context, or None for the default.

    Raises:
        ValueError: `max_workers` < 1; `task_timeout` <= 0 or not finite;
            `grace` or `kill_after` negative, NaN or infinite; an unknown
            start method.
        TypeError: `mp_context` of the wrong type.

    Example:
        ```python
        import quiesce

        with quiesce.ProcessPool(4, task_timeout=60, grace=5, kill_after=2) as pool:
            future = pool.submit(crunch, data)
            late = pool.submit_with(crunch, more, timeout=5)
            future.cancel()       # a RUNNING task: token, SIGTERM, SIGKILL
            pool.stop()           # bounded: back within grace + kill_after
        ```
    """

    kind = "process"

    def __init__(self, max_workers: int | None = None, *, task_timeout: float | None = None,
                 grace: float = 5.0, kill_after: float = 2.0,
                 mp_context: BaseContext | str | None = None) -> None:
        super().__init__(max_workers, task_timeout, grace, kill_after)
        self._ctx = resolve_context(mp_context)
        self._name = f"ProcessPool-{next(_ids)}"
        self._token = StopToken()
        self._pending: collections.deque[tuple[Task, bytes]] = collections.deque()
        self._workers: list[_Worker] = []
        self._numbers = itertools.count(1)
        self._task_ids = itertools.count(1)
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        self._dispatcher: threading.Thread | None = None
        self._stopping = False
        self._timer_obj = Timer(f"{self._name}-timer")
        self._start_error: BaseException | None = None
        self._selector: selectors.BaseSelector  # made by the dispatcher thread
        self._closed = threading.Event()  # every worker reaped, every fd closed
        self._clearers: list[threading.Thread] = []  # ending the remains of dead workers
        self._link_above()

    # -- Executor ------------------------------------------------------------------------
    def _submit(self, fn: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any],
                timeout: float | None) -> TaskFuture[T]:
        self._check_submit(fn)
        payload = pickle_target("ProcessPool.submit", fn, args, kwargs)
        task = Task(fn, (), {}, timeout)
        with self._lock:
            if self._shutdown:
                raise RuntimeError(self._closed_message())
            if self._start_error is not None:
                raise RuntimeError(f"{self._name} cannot start workers: "
                                   f"{self._start_error}") from self._start_error
            self._pending.append((task, payload))
            if self._dispatcher is None:
                dispatcher = threading.Thread(target=self._dispatch, daemon=True,
                                              name=f"{self._name}-dispatcher")
                try:
                    dispatcher.start()
                except BaseException:  # thread limit: the caller hears it, nothing waits on it
                    self._pending.remove((task, payload))
                    raise
                self._dispatcher = dispatcher
            self._wake()
        return task.future

    def map(self, fn: Callable[..., T], *iterables: Iterable[Any], timeout: float | None = None,
            chunksize: int = 1) -> Iterator[T]:
        """As `ProcessPoolExecutor.map`: results in order, `chunksize` calls per task.

        Args:
            fn: The callable, picklable.
            *iterables: Argument iterables, zipped as by `map`.
            timeout: Seconds for the whole iteration; None: no limit.
            chunksize: Calls sent to a worker as one task (a cancel, timeout
                or death concerns the whole chunk); an int >= 1.

        Returns:
            An iterator over the results.

        Raises:
            ValueError: `chunksize` < 1.
            TimeoutError: While iterating, if `timeout` passes.

        Example:
            ```python
            squares = list(pool.map(pow, range(1000), itertools.repeat(2), chunksize=50))
            ```
        """
        if isinstance(chunksize, bool) or not isinstance(chunksize, int) or chunksize < 1:
            raise ValueError(f"chunksize must be an int >= 1, got {chunksize!r}")
        if chunksize == 1:
            return super().map(fn, *iterables, timeout=timeout)
        chunks = _chunks(zip(*iterables, strict=False), chunksize)
        results = super().map(_call_chunk, itertools.repeat(fn), chunks, timeout=timeout)
        return itertools.chain.from_iterable(results)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """As `ProcessPoolExecutor.shutdown`: no new work; optionally wait for running tasks.

        `wait=True` waits for running tasks however long they take, then
        for every worker to be reaped (use `stop()` for a bounded end).

        Args:
            wait: Wait until the tasks have ended and the workers are reaped.
            cancel_futures: Cancel the tasks that have not started.
        """
        with self._lock:
            self._shutdown = True
            if cancel_futures:
                self._cancel_pending()
            dispatcher = self._dispatcher
            self._wake()
        if dispatcher is None:
            self._close()
        elif wait and threading.current_thread() is not dispatcher:
            in_slices(self._closed.wait, None)  # (a done-callback runs on the dispatcher)

    def _stop(self, grace: float) -> None:
        if threading.current_thread() is self._dispatcher:
            # A done-callback (they run here) stopping the pool: the dispatcher must go
            # on serving the ladder, so the stop runs beside it and this call returns.
            threading.Thread(target=self._stop, args=(grace,), daemon=True,
                             name=f"{self._name}-stop").start()
            return
        with self._lock:
            self._shutdown = self._stopping = True
            self._cancel_pending()
            running = list(self._running)
            dispatcher = self._dispatcher
        self._token.stop(self._stopped_from_above or "pool stopped")
        for future in running:
            future.cancel()
        with self._lock:
            self._wake()
        if dispatcher is None:
            self._close()
            return
        if not self._wait_until(lambda: not self._busy_workers(), grace):
            self._signal_busy(signal.SIGTERM)
            if not self._wait_until(lambda: not self._busy_workers(), self._kill_after):
                self._signal_busy(signal.SIGKILL)
        in_slices(self._closed.wait, None)

    # -- the dispatcher thread ---------------------------------------------------------------
    def _dispatch(self) -> None:
        # One selector for the pool's life: multiprocessing.connection.wait would build
        # and fill a new one for every task.
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        try:
            while self._dispatch_once():
                pass
        except Exception:
            log.exception("quiesce: %s dispatcher failed; failing all its tasks", self._name)
            self._fail_everything()
        finally:
            self._close()

    def _dispatch_once(self) -> bool:
        """One round; False once shut down with nothing left to do."""
        self._assign()
        with self._lock:
            if self._shutdown and not self._pending and \
                    not any(w.task for w in self._workers if not w.dead):
                return False
            have_workers = bool(self._workers)
        events = self._selector.select(None if have_workers else 0.5)
        exits = []
        for key, _ in events:
            if key.data is None:
                os.read(self._wake_r, 4096)
            elif key.data[0] == "exit":
                exits.append(key.data[1])  # after its last message, if any, is read
            elif not key.data[1].dead:
                self._receive(key.data[1])
        for worker in exits:
            self._bury(worker)
        return True

    def _assign(self) -> None:
        while True:
            with self._lock:
                if not self._pending:
                    return
                worker = next((w for w in self._workers if not w.dead and w.task is None), None)
                if worker is None:
                    if len([w for w in self._workers if not w.dead]) >= self._max_workers:
                        return
                    try:
                        worker = _Worker(self, next(self._numbers))
                    except Exception as exc:
                        self._start_error = exc
                        self._cancel_pending(exc)
                        return
                    self._workers.append(worker)
                    self._selector.register(worker.tasks, selectors.EVENT_READ, ("tasks", worker))
                    self._selector.register(worker.exit_fd, selectors.EVENT_READ, ("exit", worker))
                task, payload = self._pending.popleft()
                if not self._start_task(task, worker):
                    continue  # cancelled while pending
                worker.task, worker.task_id = task, next(self._task_ids)
                task.future._stop_running = self._stop_running
            try:
                worker.tasks.send_bytes(pickle.dumps((worker.task_id, payload, task.deadline)))
            except OSError:
                pass  # it died: _bury will fail the task

    def _receive(self, worker: _Worker) -> None:
        try:
            message = pickle.loads(worker.tasks.recv_bytes())
        except (EOFError, OSError):
            return  # it is dying: the exit fd tells
        except Exception as error:  # e.g. an exception class that cannot be rebuilt here
            message = ("failed", worker.task_id,
                       RuntimeError(f"cannot read the outcome: {error}"), "")
        with self._lock:
            task = worker.task
            if task is None or message[1] != worker.task_id:
                return
            worker.task = None
        kind = message[0]
        if kind == "ok":
            resolve(task.future, message[2])
        elif kind == "stopped":
            task.future.cancel()  # no-op if a cancel or timeout already ended it
        else:
            exc: BaseException = message[2]
            if message[3]:
                exc.__cause__ = RemoteTraceback(message[3])
            resolve(task.future, exception=exc)
        self._end_task(task)

    def _bury(self, worker: _Worker) -> None:
        """A worker exited: reap it, fail its task, end what remains of its tree."""
        if worker.tasks.poll(0):
            self._receive(worker)  # it answered just before it exited
        self._selector.unregister(worker.tasks)
        self._selector.unregister(worker.exit_fd)
        with self._lock:
            code = worker.handle.reap()
            worker.dead = True
            task, worker.task = worker.task, None
            self._workers.remove(worker)
            self._changed.notify_all()
        worker.close_pipes()
        if task is not None:
            resolve(task.future, exception=ProcessDied(worker.name, code))
            self._end_task(task)
        clearer = threading.Thread(target=self._clear_tree, args=(worker,), daemon=True,
                                   name=f"{worker.name}-remains")
        try:
            clearer.start()
        except RuntimeError:  # no thread to spare: end the remains right here
            self._clear_tree(worker)
            return
        with self._lock:
            self._clearers = [t for t in self._clearers if t.is_alive()] + [clearer]

    def _clear_tree(self, worker: _Worker) -> None:
        try:
            worker.handle.end_remains(kill_after=self._kill_after,
                                      kill_now=lambda: self._stopping)
        finally:
            worker.handle.close()

    # -- ending a running task ----------------------------------------------------------------
    def _stop_running(self, future: TaskFuture[Any], reason: str) -> None:
        with self._lock:
            task = self._running.get(future)
            worker = task.worker if task is not None else None
            if task is None or not isinstance(worker, _Worker) or worker.task is not task:
                return
            task_id = worker.task_id
        worker.request_stop(task_id, reason)
        now = time.monotonic()
        self._timer_obj.call_at(now + self._grace,
                                lambda: self._escalate(worker, task_id, signal.SIGTERM))
        self._timer_obj.call_at(now + self._grace + self._kill_after,
                                lambda: self._escalate(worker, task_id, signal.SIGKILL))

    def _escalate(self, worker: _Worker, task_id: int, sig: int) -> None:
        with self._lock:
            if worker.task is not None and worker.task_id == task_id:
                self._signal(worker, sig)

    def _busy_workers(self) -> list[_Worker]:
        return [w for w in self._workers if not w.dead and w.task is not None]

    def _signal_busy(self, sig: int) -> None:
        with self._lock:
            for worker in self._busy_workers():
                self._signal(worker, sig)

    def _signal(self, worker: _Worker, sig: int) -> None:
        """Signal a busy worker (under the lock); remember it for a scope's report."""
        worker.signal(sig)
        self._note_ending("killed" if sig == signal.SIGKILL else "terminated")

    def _hurry(self, sig: int) -> None:
        self._signal_busy(sig)

    # -- helpers --------------------------------------------------------------------------------
    def _wake(self) -> None:
        """Wake the dispatcher; call under the lock (``_close`` closes the fd under it)."""
        if self._wake_w < 0:
            return
        try:
            os.write(self._wake_w, b"x")
        except (BlockingIOError, OSError):
            pass  # already pending, or closed

    def _cancel_pending(self, error: BaseException | None = None) -> None:
        while self._pending:
            task, _ = self._pending.popleft()
            if error is None:
                task.future.cancel()
            else:
                resolve(task.future, exception=RuntimeError(f"cannot start a worker: {error}"))

    def _fail_everything(self) -> None:
        with self._lock:
            self._shutdown = True
            self._cancel_pending()
            for worker in self._workers:
                worker.signal(signal.SIGKILL)
            running = list(self._running)
        for future in running:
            resolve(future, exception=RuntimeError(f"{self._name} failed"))

    def _close(self) -> None:
        """Close pipes (idle workers exit on EOF), reap every worker, release fds."""
        with self._lock:
            workers = list(self._workers)
            self._workers.clear()
        for worker in workers:
            worker.say_goodbye()
            worker.close_pipes()
        with self._lock:
            clearers, self._clearers = self._clearers, []
        for clearer in clearers:  # what remains of dead workers' trees is ended by now
            clearer.join()
        for worker in workers:
            if not worker.handle.wait_exited(self._grace + self._kill_after):
                worker.signal(signal.SIGKILL)
            worker.handle.reap()
            worker.dead = True
            self._clear_tree(worker)
        with self._lock:
            self._changed.notify_all()
            if self._wake_r >= 0:
                os.close(self._wake_r)
                os.close(self._wake_w)
                self._wake_r = self._wake_w = -1
        self._timer_obj.close()
        self._unlink_above()
        selector = getattr(self, "_selector", None)
        if selector is not None:
            selector.close()
        self._closed.set()

    def _queue_empty(self) -> bool:
        return not self._pending

    def _timer(self) -> Timer:
        return self._timer_obj


def _chunks(items: Iterable[tuple[Any, ...]], size: int) -> Iterator[list[tuple[Any, ...]]]:
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


def _call_chunk(fn: Callable[..., Any], chunk: list[tuple[Any, ...]]) -> list[Any]:
    return [fn(*args) for args in chunk]
