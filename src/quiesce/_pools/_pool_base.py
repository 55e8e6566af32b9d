"""What ThreadPool and ProcessPool share: the Executor surface, checks, registry.

Both are ``concurrent.futures.Executor``s: ``submit``, ``map``,
``shutdown(wait, cancel_futures)`` with the stdlib's meaning, and ``with``
(which shuts down and waits, like the stdlib). Beyond it: a per-task
timeout (``task_timeout=`` for the pool, ``submit_with(..., timeout=)``
per call) and ``stop(grace=None)``, the bounded shutdown.

A pool belongs to the token current where it is made (a scope body, a
worker, else the root token that ``handle_signals`` stops), as a Scope
does: when that token stops, the pool runs its bounded ``stop()`` in a
thread of its own. Without this, ``with ThreadPool() as pool:`` under
``quiesce.run`` would hang on SIGTERM: ``Stopped`` unwinds ``main`` into
the pool's ``__exit__``, whose ``shutdown(wait=True)`` waits, as the
stdlib's does, for a task nobody asked to stop. The link holds the pool
weakly and is dropped when the pool is collected or has stopped.

Pools never shut down by their user are stopped at interpreter exit (by
``threading._register_atexit``, before the interpreter joins threads), so
a stuck task never hangs the exit as it does with the stdlib's pools.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any, TypeVar

from quiesce._core import _describers, _validate
from quiesce._core._context import current_token
from quiesce._core._ended_by import EndedBy
from quiesce._core._main_wait import in_slices
from quiesce._core._token import StopHandle
from quiesce._pools._pool_futures import TaskFuture

T = TypeVar("T")
log = logging.getLogger("quiesce")


class Task:
    """One submitted call and its future; ``started`` once a worker runs it."""

    __slots__ = ("args", "deadline", "fn", "future", "kwargs", "started", "timeout", "token",
                 "worker")

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any],
                 timeout: float | None) -> None:
        self.future: TaskFuture[Any] = TaskFuture()
        self.fn, self.args, self.kwargs, self.timeout = fn, args, kwargs, timeout
        self.started: float | None = None
        self.worker: Any = None
        self.token: Any = None  # the task's StopToken, once running
        self.deadline = current_token().deadline  # submitted in a deadline block: ends then

    def describe(self) -> str:
        name = getattr(self.fn, "__qualname__", None) or repr(self.fn)
        since = "" if self.started is None else \
            f", running for {time.monotonic() - self.started:.1f} s"
        return f"{name}(...){since}"


class Pool(Executor):
    """The shared half of ThreadPool and ProcessPool."""

    kind = "pool"

    def __init__(self, max_workers: int | None, task_timeout: float | None, grace: float,
                 kill_after: float) -> None:
        if max_workers is None:
            max_workers = min(32, (os.cpu_count() or 1) + 4) if self.kind == "thread" \
                else (os.cpu_count() or 1)
        if isinstance(max_workers, bool) or not isinstance(max_workers, int) or max_workers < 1:
            raise ValueError(f"max_workers must be an int >= 1, got {max_workers!r}")
        self._max_workers = max_workers
        self._task_timeout = _validate.seconds("task_timeout", task_timeout, allow_none=True)
        if self._task_timeout == 0:
            raise ValueError("task_timeout must be > 0 seconds (or None for no limit)")
        self._grace = _validate.required_seconds("grace", grace)
        self._kill_after = _validate.required_seconds("kill_after", kill_after)
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)  # a task or a worker ended
        self._shutdown = False
        self._running: dict[TaskFuture[Any], Task] = {}
        self._idle_hooks: list[Callable[[], None]] = []
        self._watchers = 0  # threads in _wait_until: task ends must notify them
        self._ended_by: EndedBy = "stopped"  # the hardest way a task of ours had to end
        self._above: StopHandle | None = None
        self._stopped_from_above: str | None = None
        _live_pools.add(self)

    def _note_ending(self, how: EndedBy) -> None:
        """Remember the hardest ending so far, for a scope's report."""
        if _HARDNESS.index(how) > _HARDNESS.index(self._ended_by):
            self._ended_by = how

    def _hurry(self, sig: int) -> None:
        """A scope's ladder step (SIGTERM, SIGKILL), maybe earlier than our own grace."""
        raise NotImplementedError

    def _link_above(self) -> None:
        """Stop when the current token stops; call last in ``__init__`` (it may fire at once)."""
        parent = current_token()
        pool_ref, parent_ref = weakref.ref(self), weakref.ref(parent)

        def stop_from_above() -> None:
            pool, token = pool_ref(), parent_ref()
            if pool is not None:
                pool._stop_from_above(token.reason if token is not None else None)

        self._above = handle = parent.on_stop(stop_from_above)
        weakref.finalize(self, handle.cancel)

    def _unlink_above(self) -> None:
        """Ended, or owned by a scope that stops it itself: no stop from above needed."""
        handle, self._above = self._above, None
        if handle is not None:
            handle.cancel()

    def _stop_from_above(self, reason: str | None) -> None:
        """Runs in the stopping thread (maybe a signal's helper): stop in a thread of our own."""
        with self._lock:
            self._stopped_from_above = reason or "stopped from above"
            self._shutdown = True  # no new work from now on, even before the stop thread runs
        threading.Thread(target=self._stop_quietly, name=f"quiesce-stop-{type(self).__name__}",
                         daemon=True).start()

    def _stop_quietly(self) -> None:
        try:
            self.stop()
        except Exception:
            log.exception("quiesce: stopping %r failed", self)

    # -- the Executor surface -----------------------------------------------------------
    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> TaskFuture[T]:
        """Schedule `fn(*args, **kwargs)`; as `concurrent.futures.Executor.submit`.

        The task runs with a token of its own (`current_token()` inside it,
        or the keyword `token` if `fn` declares a parameter of that name).
        The future's `cancel()` works on a *running* task too: the future
        ends cancelled at once, the task's token is stopped, and a task that
        ignores it is ended after the pool's grace (a thread is abandoned
        and replaced; a process gets SIGTERM, then SIGKILL after kill_after,
        and a new worker takes its place). The pool's `task_timeout`
        applies.

        Args:
            fn: The callable; for a ProcessPool, picklable with its arguments.
            *args: Positional arguments for `fn`.
            **kwargs: Keyword arguments for `fn`.

        Returns:
            A `concurrent.futures.Future`.

        Raises:
            TypeError: `fn` is not callable; for a ProcessPool, `fn` or its
                arguments cannot be pickled (the message says which).
            RuntimeError: The pool was shut down or stopped.

        Example:
            ```python
            future = pool.submit(crunch, data)
            try:
                print(future.result(timeout=60))
            except TimeoutError:
                future.cancel()             # stops the running task
            ```
        """
        return self._submit(fn, args, kwargs, self._task_timeout)

    def submit_with(self, fn: Callable[..., T], /, *args: Any, timeout: float | None,
                    **kwargs: Any) -> TaskFuture[T]:
        """`submit` with this call's own time limit instead of the pool's `task_timeout`.

        Once the task has run `timeout` seconds (counted from its start, not
        its submission), its future fails with `TimeoutError` and the task
        is stopped as by `cancel()`.

        Args:
            fn: The callable.
            *args: Positional arguments for `fn`.
            timeout: Seconds, > 0; None: no limit, whatever the pool's.
            **kwargs: Keyword arguments for `fn`.

        Returns:
            A `concurrent.futures.Future`.

        Raises:
            ValueError: `timeout` is 0, negative, NaN or infinite.
            TypeError: As for `submit`.
            RuntimeError: The pool was shut down or stopped.

        Example:
            ```python
            quick = pool.submit_with(lookup, key, timeout=2.0)
            quick.result()                  # TimeoutError after 2 s of running
            ```
        """
        limit = _validate.seconds("timeout", timeout, allow_none=True)
        if limit == 0:
            raise ValueError("timeout must be > 0 seconds (or None for no limit)")
        return self._submit(fn, args, kwargs, limit)

    def _submit(self, fn: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any],
                timeout: float | None) -> TaskFuture[T]:
        raise NotImplementedError

    def _check_submit(self, fn: object) -> None:
        _validate.callable_target("fn", fn)
        if self._shutdown:
            raise RuntimeError(self._closed_message())

    def _closed_message(self) -> str:
        name = type(self).__name__
        if self._stopped_from_above is not None:
            return (f"cannot submit to a {name} stopped from above "
                    f"({self._stopped_from_above}): the token current where it was made stopped")
        return f"cannot submit to a {name} after shutdown or stop"

    def stop(self, grace: float | None = None) -> None:
        """The bounded shutdown: cancel what waits, stop what runs, and return.

        Queued tasks are cancelled; every running task's future ends
        cancelled and its token is stopped; a task still running after
        `grace` is ended (threads: abandoned; processes: SIGTERM, then
        SIGKILL after the pool's kill_after). Returns within
        `grace + kill_after` plus reaping, whatever the tasks do, unlike
        `shutdown(wait=True)`. Afterwards the pool takes no new work.

        Args:
            grace: Seconds to give running tasks; None: the pool's `grace`.

        Raises:
            ValueError: `grace` is negative, NaN or infinite.

        Example:
            ```python
            pool = quiesce.ProcessPool(4, grace=5, kill_after=2)
            futures = [pool.submit(crunch, c) for c in chunks]
            ...
            pool.stop()                     # back within about 7 s
            ```
        """
        grace = self._grace if grace is None else _validate.required_seconds("grace", grace)
        self._stop(grace)
        self._unlink_above()

    def _stop(self, grace: float) -> None:
        raise NotImplementedError

    # -- shared mechanics ---------------------------------------------------------------------
    def _start_task(self, task: Task, worker: Any) -> bool:
        """Mark running (False if it was cancelled while queued); arm its timeout."""
        if not task.future.set_running_or_notify_cancel():
            return False
        task.started = time.monotonic()
        task.worker = worker
        self._running[task.future] = task  # one dict op: atomic under the GIL, no lock needed
        if task.timeout is not None or task.deadline is not None:
            self._arm_timeout(task)
        return True

    def _arm_timeout(self, task: Task) -> None:
        assert task.started is not None
        limit = task.timeout
        if limit is not None:
            self._timer().call_at(task.started + limit, lambda: task.future.time_out(limit))
        if task.deadline is not None:
            self._timer().call_at(task.deadline, task.future.deadline_passed)

    def _end_task(self, task: Task) -> None:
        self._running.pop(task.future, None)
        if self._watchers or self._idle_hooks:  # only then is the lock worth taking
            self._notify_task_end()

    def _notify_task_end(self) -> None:
        with self._lock:
            idle = not self._running and self._queue_empty()
            self._changed.notify_all()
        if idle:
            for hook in list(self._idle_hooks):
                hook()

    def _queue_empty(self) -> bool:
        raise NotImplementedError

    def _timer(self) -> Any:
        raise NotImplementedError

    def busy(self) -> bool:
        """Whether any task waits or runs.

        Returns:
            True while a submitted task has not ended.
        """
        with self._lock:
            return bool(self._running) or not self._queue_empty()

    def _describe(self) -> list[str]:
        running = list(self._running.values())
        return [f"{type(self).__name__} {id(self):#x}: {t.describe()}" for t in running]

    def _wait_until(self, done: Callable[[], bool], timeout: float | None) -> bool:
        """Wait until ``done()`` (checked under the lock, on every change) or ``timeout``."""

        def wait(step: float | None) -> bool:
            with self._changed:
                return self._changed.wait_for(done, step)

        with self._lock:
            self._watchers += 1
        try:
            return in_slices(wait, timeout)
        finally:
            with self._lock:
                self._watchers -= 1


_HARDNESS: tuple[EndedBy, ...] = ("stopped", "terminated", "killed", "abandoned")
_live_pools: weakref.WeakSet[Pool] = weakref.WeakSet()


def _describe_pools() -> list[str]:
    lines: list[str] = []
    for pool in list(_live_pools):
        lines.extend(pool._describe())
    return lines


def _stop_pools_at_exit() -> None:
    for pool in list(_live_pools):
        if not pool._shutdown or pool.busy():
            try:
                pool.stop()
            except Exception:
                log.exception("quiesce: stopping %r at exit failed", pool)


_describers.register_describer(_describe_pools)
threading._register_atexit(_stop_pools_at_exit)  # type: ignore[attr-defined]
os.register_at_fork(after_in_child=lambda: _live_pools.clear())
