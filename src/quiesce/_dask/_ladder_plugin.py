"""Ladder: the worker plugin that gives dask tasks quiesce's stop semantics.

Dask cannot stop a running task: ``client.cancel(future, force=True)``
releases the key on the scheduler, and the worker moves the task to its
``cancelled`` state and lets it run to the end, its thread slot busy all
the while (dask/distributed#4694, #3681). The plugin closes that gap with
the ladder of a quiesce pool, per task:

1. the task's token (``quiesce.current_token()`` inside it) stops the moment
   the worker learns of the cancel: the plugin sees the ``executing ->
   released`` transition on the worker's event loop;
2. after ``grace``, ``Stopped`` is raised in the task's thread (so its
   ``finally`` blocks run; a task ended by ``Stopped`` costs nothing more);
3. after ``kill_after``, the task is stuck (a C call): the worker's
   subprocess trees are killed (all of them: the worker is going, and a
   subprocess cannot be told apart by the task that started it) and the
   worker process closes, exiting at once if closing takes over 0.5 s, so
   that its nanny starts a fresh one and the slot is never lost. Other
   tasks running on that worker are lost with it (the scheduler reruns them,
   as after any worker death).

Each stopped run is logged on the worker (logger ``quiesce``) and, as a
``log_event`` on topic ``"quiesce"``, on the scheduler, where a client reads
it (``client.get_events("quiesce")``) or subscribes to it.

How a task gets its token: while a task executes, the plugin puts a small
stand-in (``_Guarded``) in place of the task's ``run_spec`` (the callable
the worker's ``execute`` calls in its thread). The stand-in runs the real
spec with the token as the current one and inside a ``ThreadGate``, so the
asynchronous ``Stopped`` only ever lands in the user's code, never in
dask's bookkeeping around it (dask lets only SystemExit and
KeyboardInterrupt out of a task; any other exception landing outside
``task(data)`` would upset the worker's state machine). The swap happens
on the ``-> executing`` transition, before the worker's ``execute``
coroutine reads the spec; coroutine tasks (run on the event loop) are left
alone.

Rejected: reading ``Worker.active_threads`` to find a task's thread and
interrupting it there (the exception could land after ``task(data)``
returned, in dask's own code); a hook in ``quiesce.current_token()`` asking
dask which task runs in this thread (costs every call, and threads or
asyncio tasks the task starts would not inherit the token, as they do with
a ContextVar); the nanny's ``restart`` (it waits for the executor, so a
stuck thread costs its whole timeout); a graceful close without a time
limit (it took ~2 s here before the process exited).
"""

from __future__ import annotations

import contextvars
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from distributed import WorkerPlugin

from quiesce._core import _validate
from quiesce._core._context import using
from quiesce._core._errors import Stopped
from quiesce._core._thread_interrupt import ThreadGate
from quiesce._core._token import StopToken
from quiesce._pools._timer import Timer
from quiesce._proc import _proctree
from quiesce._proc._guardian_client import Guardian

log = logging.getLogger("quiesce")

PLUGIN_NAME = "quiesce-ladder"
EVENT_TOPIC = "quiesce"
_RESTART_FALLBACK = 0.5  # the kill step closes the worker; past this, it exits at once


class _Run:
    """One execution of one task on this worker."""

    __slots__ = ("ended", "gate", "grace", "key", "kill_after", "killed", "stop_requested",
                 "terminated", "timed_out", "token", "topics")

    def __init__(self, key: Any, grace: float, kill_after: float) -> None:
        self.key = key
        self.token = StopToken._local()
        self.gate = ThreadGate()
        self.grace, self.kill_after = grace, kill_after
        self.topics: tuple[str, ...] = (EVENT_TOPIC,)
        self.stop_requested: float | None = None
        self.timed_out: float | None = None
        self.terminated = self.killed = self.ended = False


_current_run: contextvars.ContextVar[_Run | None] = contextvars.ContextVar(
    "quiesce_dask_run", default=None)


def current_run() -> _Run | None:
    """The run of the task executing in this thread (None outside a guarded task)."""
    return _current_run.get()


class _Guarded:
    """Stands in for a task's ``run_spec`` while it executes (see the module's note)."""

    def __init__(self, spec: Any, plugin: Ladder, key: Any) -> None:
        self._spec, self._plugin, self._key = spec, plugin, key

    def __call__(self, data: Any) -> Any:
        return self._plugin._execute(self._key, self._spec, data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._spec, name)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_identity, (self._spec,))

    def __repr__(self) -> str:
        return repr(self._spec)


def _identity(value: Any) -> Any:
    return value


class Ladder(WorkerPlugin):
    """A dask worker plugin: cancelling a *running* task stops it, by quiesce's ladder.

    Register it once per cluster; workers started later (or restarted by
    their nanny) get it too. Inside every task on the cluster
    `quiesce.current_token()` is then that task's own token, and
    `future.cancel()` (or `client.cancel`) of a running task:

    1. stops its token at once (so `quiesce.sleep`, `token.wait`, scopes and
       pools inside the task end);
    2. after `grace` seconds raises `quiesce.Stopped` in the task's thread,
       so its `finally` blocks run (the worker serves on);
    3. after `kill_after` more seconds, if the task is still stuck (in a C
       call), kills the worker's subprocess trees and closes the worker
       process; its nanny starts a new one, so the slot is not lost. A
       worker without a nanny cannot be restarted: the task is then only
       reported, `abandoned`.

    Every run that was asked to stop is logged on the worker (logger
    `quiesce`) and reported as an event on topic `"quiesce"`
    (`client.get_events("quiesce")`): a dict with `key`, `worker`,
    `ended_by` (`stopped`, `terminated`, `killed`, `abandoned`), `stop_ms`
    and `reason`. Coroutine tasks, which run on the worker's event loop, are
    left alone. The plugin also lets tasks start child processes (dask's
    workers are daemonic processes, which multiprocessing refuses children),
    so `quiesce.Scope` and `quiesce.ProcessPool` work inside tasks.

    Args:
        grace: Seconds between the token's stop and `Stopped` in the task's
            thread; finite, >= 0.
        kill_after: Seconds between `Stopped` and the kill; finite, >= 0.

    Raises:
        ValueError: `grace` or `kill_after` negative, NaN or infinite.
        TypeError: A duration that is not a real number.

    Example:
        ```python
        import distributed
        import quiesce
        import quiesce.dask

        def crunch(n):
            while not quiesce.stopped():     # this task's own token
                ...

        client = distributed.Client(cluster)
        client.register_plugin(quiesce.dask.Ladder(grace=5, kill_after=2))
        future = client.submit(crunch, 10, pure=False)
        future.cancel()                      # stops it even while it runs
        print(client.get_events("quiesce"))
        ```
    """

    name = PLUGIN_NAME

    def __init__(self, grace: float = 5.0, kill_after: float = 2.0) -> None:
        self.grace = _validate.required_seconds("grace", grace)
        self.kill_after = _validate.required_seconds("kill_after", kill_after)
        self.idempotent = False

    def __getstate__(self) -> dict[str, Any]:
        return {"grace": self.grace, "kill_after": self.kill_after,
                "idempotent": self.idempotent}

    def __repr__(self) -> str:
        return f"<quiesce.dask.Ladder grace={self.grace:g} kill_after={self.kill_after:g}>"

    # -- the WorkerPlugin hooks (the worker's event loop) ------------------------------
    def setup(self, worker: Any) -> None:
        """On each worker, at registration or start."""
        self._worker = worker
        self._lock = threading.Lock()
        self._runs: dict[Any, _Run] = {}
        self._timer = Timer("quiesce-dask-ladder")
        self._closing = False
        # dask starts its workers as daemonic processes, and multiprocessing
        # refuses children to those (they would be orphaned when a daemonic
        # parent is terminated). quiesce's children cannot be orphaned
        # (PDEATHSIG, lifeline, guardian), so let scopes and pools in tasks start them.
        multiprocessing.current_process()._config["daemon"] = False  # type: ignore[attr-defined]

    def teardown(self, worker: Any) -> None:
        """On each worker, when it closes (or the plugin is replaced)."""
        status = getattr(getattr(worker, "status", None), "name", "")
        if status not in ("closing", "closed", "closing_gracefully", "failed"):
            return  # replaced by another registration: running tasks keep their ladder
        self._closing = True
        self._timer.close()
        with self._lock:
            runs = list(self._runs.values())
        for run in runs:  # cooperative tasks end with the worker
            run.token.stop("dask worker closing")

    def transition(self, key: Any, start: str, finish: str, *args: Any, **kwargs: Any) -> None:
        """On the worker's event loop, for each task state change it makes."""
        if finish == "executing":
            self._begin(key)
        elif finish == "released" and start in ("executing", "long-running"):
            run = self._runs.get(key)
            if run is not None:
                self.stop_run(run, "cancelled")

    # -- one task's run ------------------------------------------------------------------
    def _begin(self, key: Any) -> None:
        ts = self._worker.state.tasks.get(key)
        spec = getattr(ts, "run_spec", None)
        if spec is None or getattr(spec, "is_coro", False):
            return
        if isinstance(spec, _Guarded) and spec._plugin is not self:
            return  # a second Ladder under another name: the first one runs the task
        with self._lock:
            self._runs[key] = _Run(key, self.grace, self.kill_after)
        if not isinstance(spec, _Guarded):
            ts.run_spec = _Guarded(spec, self, key)

    def _execute(self, key: Any, spec: Callable[[Any], Any], data: Any) -> Any:
        """Runs in the task's thread: the real spec, with the run's token and gate."""
        with self._lock:
            run = self._runs.get(key)
            if run is None or run.ended:  # executed again without a transition we saw
                run = self._runs[key] = _Run(key, self.grace, self.kill_after)
        reset = _current_run.set(run)
        try:
            with using(run.token):
                run.gate.arm()
                try:
                    return spec(data)
                finally:
                    run.gate.disarm()
        finally:
            _current_run.reset(reset)
            self._ended(run)

    def _ended(self, run: _Run) -> None:
        with self._lock:
            if run.ended:
                return
            run.ended = True
            if self._runs.get(run.key) is run:
                del self._runs[run.key]
            asked = run.stop_requested
        if asked is None or run.killed:
            return
        how = "terminated" if run.gate.interrupted else "stopped"
        stop_ms = (time.monotonic() - asked) * 1000.0
        log.info("quiesce.dask: task %r %s in %.0f ms (%s)", run.key, how, stop_ms,
                 run.token.reason)
        self._event(run, ended_by=how, stop_ms=round(stop_ms, 3), reason=run.token.reason)

    def stop_run(self, run: _Run, reason: str, grace: float | None = None) -> bool:
        """Step 1 of the ladder: stop the run's token; the next steps follow on the timer."""
        with self._lock:
            if run.ended or run.stop_requested is not None:
                return False
            run.stop_requested = now = time.monotonic()
        run.token.stop(reason)
        wait = run.grace if grace is None else grace
        self._timer.call_at(now + wait, lambda: self.terminate_run(run))
        return True

    def terminate_run(self, run: _Run) -> None:
        """Step 2: ``Stopped`` in the task's thread; the kill follows after kill_after."""
        with self._lock:
            if run.ended or run.terminated:
                return
            run.terminated = True
        if run.gate.interrupt(Stopped):
            log.warning("quiesce.dask: task %r ignored its stop for its grace; raised Stopped "
                        "in its thread", run.key)
        self._timer.call_at(time.monotonic() + run.kill_after, lambda: self.kill_run(run))

    def kill_run(self, run: _Run) -> None:
        """Step 3, off the timer thread (killing a tree takes a while)."""
        with self._lock:
            if run.ended or run.killed or self._closing:
                return
            run.killed = True
        threading.Thread(target=self._kill, args=(run,), name="quiesce-dask-kill",
                         daemon=True).start()

    def _kill(self, run: _Run) -> None:
        worker = self._worker
        asked = run.stop_requested or time.monotonic()
        stop_ms = round((time.monotonic() - asked) * 1000.0, 3)
        if worker.nanny is None:
            log.error("quiesce.dask: task %r is stuck %.0f ms after its stop request and "
                      "worker %s has no nanny to restart it: its thread is abandoned",
                      run.key, stop_ms, worker.address)
            self._event(run, ended_by="abandoned", stop_ms=stop_ms, reason=run.token.reason)
            return
        log.error("quiesce.dask: task %r is stuck %.0f ms after its stop request: killing "
                  "the subprocesses of worker %s and restarting it through its nanny",
                  run.key, stop_ms, worker.address)
        self._event(run, ended_by="killed", stop_ms=stop_ms, reason=run.token.reason)
        _kill_descendants(timeout=5.0)
        threading.Thread(target=_exit_later, args=(_RESTART_FALLBACK,),
                         name="quiesce-dask-exit", daemon=True).start()
        worker.loop.add_callback(self._close_worker, f"quiesce: task {run.key!r} stuck")

    async def _close_worker(self, reason: str) -> None:
        # nanny=False: the nanny sees its worker exit while it runs, and starts a new one.
        await self._worker.close(nanny=False, executor_wait=False, reason=reason)

    def arm_timeout(self, run: _Run, seconds: float) -> None:
        """Stop ``run`` ``seconds`` from now as timed out (the Executor's task_timeout)."""
        self._timer.call_at(time.monotonic() + seconds, lambda: self._time_out(run, seconds))

    def _time_out(self, run: _Run, seconds: float) -> None:
        if run.ended or run.stop_requested is not None:
            return
        run.timed_out = seconds
        self._event(run, timed_out=seconds)
        self.stop_run(run, f"timed out after {seconds:g} s")

    def _event(self, run: _Run, **fields: Any) -> None:
        msg = {"key": str(run.key), "worker": self._worker.address, **fields}
        try:
            self._worker.log_event(list(run.topics), msg)
        except Exception:
            log.exception("quiesce.dask: could not report %r to the scheduler", msg)

    # -- for the Executor, through client.run -----------------------------------------------
    def runs(self, prefix: str) -> list[_Run]:
        with self._lock:
            # A killed run counts until its worker has closed: an Executor's stop()
            # waits for that, as a pool's waits for the reaping of what it killed.
            return [r for k, r in self._runs.items() if isinstance(k, str) and k.startswith(prefix)]


def _kill_descendants(timeout: float) -> None:
    """SIGKILL every descendant of this worker but quiesce's guardian.

    The guardian stays: once the worker has exited it kills whatever still
    carries the worker's tag (a descendant that escaped by ``setsid``
    during the kill), and killing it first would only log a false alarm.
    """
    guardian = Guardian._instance
    spared = {guardian.pid} if guardian is not None and guardian.pid is not None else set()
    deadline = time.monotonic() + timeout
    while True:
        refs = [r for r in _proctree.snapshot(root_pid=os.getpid(), include_root=False)
                if r.pid not in spared]
        if not refs:
            return
        for ref in refs:
            ref.send(signal.SIGKILL)
            ref.close()
        if time.monotonic() >= deadline:
            log.error("quiesce.dask: descendants of worker %d survived SIGKILL: %s",
                      os.getpid(), [r.pid for r in refs])
            return
        time.sleep(0.005)


def _exit_later(seconds: float) -> None:
    time.sleep(seconds)
    os._exit(1)


def plugin_of(worker: Any) -> Ladder | None:
    plugin = getattr(worker, "plugins", {}).get(PLUGIN_NAME)
    return plugin if isinstance(plugin, Ladder) else None


def running_keys(prefix: str, dask_worker: Any = None) -> list[str]:
    """On a worker (``client.run``): keys starting with ``prefix`` still executing."""
    plugin = plugin_of(dask_worker)
    return [str(r.key) for r in plugin.runs(prefix)] if plugin is not None else []


def stop_runs(prefix: str, reason: str, grace: float, step: str = "stop",
              dask_worker: Any = None) -> list[str]:
    """On a worker (``client.run``): take runs under ``prefix`` to a ladder step."""
    plugin = plugin_of(dask_worker)
    if plugin is None:
        return []
    runs: Iterable[_Run] = plugin.runs(prefix)
    for run in runs:
        if step == "stop":
            plugin.stop_run(run, reason, grace)
        elif step == "terminate":
            plugin.stop_run(run, reason, grace)
            plugin.terminate_run(run)
        else:
            plugin.stop_run(run, reason, grace)
            plugin.terminate_run(run)
            plugin.kill_run(run)
    return [str(r.key) for r in plugin.runs(prefix)]
