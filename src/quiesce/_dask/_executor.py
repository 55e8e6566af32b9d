"""Executor: a concurrent.futures.Executor over a dask cluster, with the pools' semantics.

The client side is a quiesce ``Pool`` (so it has the pools' surface:
``submit_with``, ``stop``, the owner link, a scope's ``PoolWorker``, the
exit-time stop, the doctor's list) whose tasks are dask futures. The
worker side is the ``Ladder`` plugin, registered on demand (idempotently:
a Ladder the user registered first stays), and a small wrapper, ``_call``,
that each task runs in: it hands the run the executor's grace, kill_after
and event topic, arms the task's timeout on the worker, passes ``token=``
to targets that ask for it, and turns a timed-out run into ``TimeoutError``.

Choices:
- a task's future counts as *running* from ``submit`` on: the client does
  not learn when a worker starts it (one message per task would be the
  price), and a cancel works the same either way (the scheduler releases a
  queued key; the worker's plugin stops a running one);
- the timeout is counted on the worker, from the moment the task starts, as
  in the pools; the worker reports it as an event on the executor's own
  topic, which ends the future with ``TimeoutError`` at once, before the
  task has wound down; the wrapper's ``TimeoutError`` is the fallback;
- ``stop()`` asks every worker, through ``client.run``, to stop this
  executor's runs (keys share a prefix) with the grace given, cancels the
  futures, then polls the workers until none of its keys runs, bounded by
  grace + kill_after + the time a worker takes to close.

Rejected: ``distributed.cfexecutor.ClientExecutor`` (``client.get_executor()``):
its ``cancel()`` refuses running tasks and its ``shutdown`` waits for them.
"""

from __future__ import annotations

import asyncio
import itertools
import signal
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any, TypeVar, cast, final

import distributed

from quiesce._core._context import current_token
from quiesce._core._errors import Stopped
from quiesce._dask._ladder_plugin import (
    EVENT_TOPIC,
    Ladder,
    current_run,
    plugin_of,
    running_keys,
    stop_runs,
)
from quiesce._pools._pool_base import Pool, Task
from quiesce._pools._pool_futures import TaskFuture, resolve
from quiesce._proc._wants_token import wants_token
from quiesce._scope._pool_in_scope import PoolWorker
from quiesce._scope._scope import live_scopes

T = TypeVar("T")

POLL = 0.05
CLOSE_ALLOWANCE = 5.0  # how long a worker killed at the last step may take to go away
_executor_ids = itertools.count(1)


@final
class Executor(Pool):
    """A `concurrent.futures.Executor` that runs tasks on a dask cluster, stoppably.

    Drop-in for the stdlib's executors (`submit`, `map`, `shutdown`,
    `with`), with the pools' semantics: each task has its own token
    (`quiesce.current_token()` inside it, and `token=` for a target with
    such a parameter); `future.cancel()` works on a *running* task (its
    token stops, `Stopped` is raised in its thread after `grace`, and a
    task still stuck `kill_after` later has its worker restarted by its
    nanny); `task_timeout` (or `submit_with(..., timeout=)`) ends a task
    the same way, its future raising `TimeoutError`; `stop()` is bounded.
    The `Ladder` worker plugin is registered for you if the cluster does
    not have one yet.

    Made inside a `quiesce.Scope` block, the scope owns it: leaving the
    block stops it by the scope's ladder, and `scope.report()` lists it.
    Made elsewhere, it belongs to the token current where it is made, as
    pools do (`quiesce.run` and `handle_signals` stop it on SIGTERM). A
    submitted task counts as running from `submit` on: the scheduler, not
    the client, knows when it starts.

    Args:
        client: The synchronous `distributed.Client` to submit through.
        task_timeout: Seconds a task may run, counted on its worker from its
            start; None: no limit. `submit_with` overrides it per call.
        grace: Seconds between a task's token stop and `Stopped` raised in
            it; finite, >= 0.
        kill_after: Seconds after that before its worker is restarted;
            finite, >= 0.

    Raises:
        TypeError: `client` is not a synchronous `distributed.Client`.
        ValueError: `grace` or `kill_after` negative, NaN or infinite;
            `task_timeout` <= 0.

    Example:
        ```python
        import distributed
        import quiesce.dask

        with distributed.Client(cluster) as client:
            with quiesce.dask.Executor(client, task_timeout=600, grace=5) as ex:
                futures = [ex.submit(render, frame) for frame in frames]
                futures[0].cancel()          # stops it even while it runs
        ```
    """

    kind = "dask"

    def __init__(self, client: distributed.Client, *, task_timeout: float | None = None,
                 grace: float = 5.0, kill_after: float = 2.0) -> None:
        if not isinstance(client, distributed.Client):
            raise TypeError(f"client must be a distributed.Client, not {type(client).__name__}")
        if client.asynchronous:
            raise TypeError("client must be a synchronous distributed.Client "
                            "(made with asynchronous=False, the default)")
        # The cluster, not this object, decides how many tasks run at once.
        super().__init__(1, task_timeout, grace, kill_after)
        self._client: Any = cast(Any, client)  # distributed's API is untyped
        self._id = f"{next(_executor_ids)}{uuid.uuid4().hex[:8]}"
        self._prefix = f"quiesce-{self._id}-"
        self._topic = f"quiesce-executor-{self._id}"
        self._keys = itertools.count(1)
        self._by_key: dict[str, Task] = {}
        self._closed = False
        plugin = Ladder(grace, kill_after)
        plugin.idempotent = True  # a Ladder the user registered first stays
        self._client.register_plugin(plugin)
        self._client.subscribe_topic(self._topic, self._on_event)
        self._link_above()
        _adopt_into_scope(self)

    # -- Executor ---------------------------------------------------------------------------
    def _submit(self, fn: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any],
                timeout: float | None) -> TaskFuture[T]:
        self._check_submit(fn)
        task = Task(fn, args, kwargs, timeout)
        label = getattr(fn, "__name__", None) or type(fn).__name__
        key = f"{self._prefix}{next(self._keys)}-{label}"
        future = task.future
        future._stop_running = self._stop_running
        future.set_running_or_notify_cancel()
        task.started = time.monotonic()
        task.token = key
        with self._lock:
            self._running[future] = task
            self._by_key[key] = task
        try:
            dask_future: Any = self._client.submit(
                _call, fn, args, kwargs, (timeout, self._grace, self._kill_after, self._topic),
                key=key, pure=False)
        except BaseException:
            with self._lock:
                self._running.pop(future, None)
                self._by_key.pop(key, None)
            raise
        task.worker = dask_future
        task.args = task.kwargs = None  # type: ignore[assignment]
        dask_future.add_done_callback(lambda done: self._dask_done(task, done))
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            self._shutdown = True
            tasks = list(self._running.values())
        if cancel_futures and tasks:
            running = set(self._on_workers(running_keys, self._prefix))
            queued = [t for t in tasks if t.token not in running]
            self._cancel_remote([t.worker for t in queued if t.worker is not None])
            _cancel_locally(queued)
        if wait:
            self._wait_until(lambda: not self._running, None)
            self._close()

    def _stop(self, grace: float) -> None:
        with self._lock:
            self._shutdown = True
            tasks = list(self._running.values())
        deadline = time.monotonic() + grace + self._kill_after + CLOSE_ALLOWANCE
        if self._client_open():
            left = self._on_workers(stop_runs, self._prefix, "executor stopped", grace)
            self._cancel_remote([t.worker for t in tasks if t.worker is not None])
            _cancel_locally(tasks)
            while left and time.monotonic() < deadline:
                time.sleep(POLL)
                left = self._on_workers(running_keys, self._prefix)
        else:
            _cancel_locally(tasks)
        self._close()

    def _hurry(self, sig: int) -> None:
        """A scope's later ladder steps (maybe early, after a second signal)."""
        step = "kill" if sig == signal.SIGKILL else "terminate"
        threading.Thread(target=self._on_workers, args=(stop_runs, self._prefix,
                         "executor stopped", 0.0, step), daemon=True,
                         name=f"quiesce-dask-{step}").start()

    def _queue_empty(self) -> bool:
        return True  # the scheduler holds the queue; a submitted task counts as running

    def __repr__(self) -> str:
        return f"<quiesce.dask.Executor {self._id} running={len(self._running)}>"

    # -- futures ------------------------------------------------------------------------------
    def _dask_done(self, task: Task, done: Any) -> None:
        """On dask's callback thread: carry the outcome over to our future."""
        try:
            if done.status == "finished":
                resolve(task.future, done.result())
            elif done.status == "error":
                exc = done.exception()
                resolve(task.future, exception=exc if exc is not None else RuntimeError(
                    f"dask task {done.key!r} failed without an exception"))
            elif done.status == "cancelled":
                task.future._stop_running = None  # dask cancelled it already
                task.future.cancel()
            else:
                resolve(task.future, exception=RuntimeError(
                    f"dask task {done.key!r} ended {done.status!r}"))
        except BaseException as exc:  # fetching the result failed (e.g. unpicklable)
            resolve(task.future, exception=exc)
        finally:
            with self._lock:
                self._by_key.pop(task.token, None)
            self._end_task(task)

    def _stop_running(self, future: TaskFuture[Any], reason: str) -> None:
        """``cancel()`` of a submitted task: the scheduler releases it, the worker stops it."""
        if reason != "cancelled":
            return  # timed out: the worker that reported it already stops the run
        task = self._running.get(future)
        if task is not None and task.worker is not None:
            self._cancel_remote([task.worker])

    def _on_event(self, event: tuple[float, Any]) -> None:
        """A worker's report about one of our runs (on the client's event loop)."""
        msg = event[1]
        if not isinstance(msg, dict):
            return
        if "timed_out" in msg:
            task = self._by_key.get(msg.get("key", ""))
            if task is not None:
                task.future.time_out(float(msg["timed_out"]))
        elif msg.get("ended_by") in ("stopped", "terminated", "killed", "abandoned"):
            self._note_ending(msg["ended_by"])

    # -- the cluster ----------------------------------------------------------------------------
    def _client_open(self) -> bool:
        return bool(self._client.status == "running")

    def _cancel_remote(self, futures: list[Any]) -> None:
        if not futures or not self._client_open():
            return
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            self._client.cancel(futures)
            return
        # On an event loop (a dask callback): the client's sync API would not run here.
        threading.Thread(target=self._client.cancel, args=(futures,), daemon=True,
                         name="quiesce-dask-cancel").start()

    def _on_workers(self, fn: Callable[..., list[str]], *args: Any) -> list[str]:
        """``fn(*args)`` on every worker; the keys they return (workers that fail: none)."""
        if not self._client_open():
            return []
        try:
            answers = self._client.run(fn, *args, on_error="return")
        except Exception:
            return []
        return [key for keys in answers.values() if isinstance(keys, list) for key in keys]

    def _close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._unlink_above()
        if self._client_open():
            try:
                self._client.unsubscribe_topic(self._topic)
            except Exception:
                pass


def _call(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any],
          settings: tuple[float | None, float, float, str]) -> Any:
    """On the worker, in the task's thread: one Executor task, inside its Ladder run."""
    timeout, grace, kill_after, topic = settings
    run = current_run()
    plugin = plugin_of(distributed.get_worker())
    if run is None or plugin is None:
        raise RuntimeError("quiesce.dask.Executor task ran on a worker without the "
                           "quiesce.dask.Ladder plugin")
    run.grace, run.kill_after, run.topics = grace, kill_after, (EVENT_TOPIC, topic)
    if timeout is not None:
        plugin.arm_timeout(run, timeout)
    if wants_token(fn) and "token" not in kwargs:
        kwargs = {**kwargs, "token": run.token}
    try:
        result = fn(*args, **kwargs)
    except Stopped:
        if run.timed_out is not None:
            raise TimeoutError(f"task timed out after {run.timed_out:g} s") from None
        raise
    if run.timed_out is not None:
        raise TimeoutError(f"task timed out after {run.timed_out:g} s")
    return result


def _cancel_locally(tasks: list[Task]) -> None:
    """End the futures of tasks already cancelled on the cluster (in one batch)."""
    for task in tasks:
        task.future._stop_running = None
        task.future.cancel()


def _adopt_into_scope(executor: Executor) -> None:
    """Made in a scope's own block: that scope owns it, as ``scope.thread_pool()`` would."""
    token = current_token()
    for scope in live_scopes():
        if scope.token is token and not token.stopped:
            name = f"{scope.name}/dask_executor-{next(scope._worker_ids)}"
            scope._adopt(PoolWorker(scope._owner, name, executor))
            return
