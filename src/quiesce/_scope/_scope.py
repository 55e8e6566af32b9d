"""Scope: structured ownership of threads, processes and subprocesses.

Nothing a scope starts outlives it. The scope's token is a child of the
token current where it is created (an enclosing scope body or worker, else
the process root), so a stop anywhere above reaches every worker below.
Any stop of that token (``scope.stop()``, leaving the block, a worker's
failure, a signal or an outer scope) starts the ladder once, in a thread of
its own; ``join`` and ``__exit__`` wait for it. ``stop()`` itself never
blocks, so a worker may call it on its own scope.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import weakref
from collections.abc import Callable
from contextvars import Token as ContextToken
from multiprocessing.context import BaseContext
from types import TracebackType
from typing import Any, Literal, final

from quiesce._core import _validate
from quiesce._core._context import _current, current_token
from quiesce._core._errors import Stopped
from quiesce._core._main_wait import in_slices
from quiesce._core._token import StopToken
from quiesce._pools._processpool import ProcessPool
from quiesce._pools._threadpool import ThreadPool
from quiesce._proc._command import Argv, check_argv, command_name
from quiesce._proc._mp_context import resolve_context
from quiesce._proc._pickling import pickle_target
from quiesce._scope._ladder import run_ladder
from quiesce._scope._pool_in_scope import PoolWorker
from quiesce._scope._popen_worker import PopenWorker
from quiesce._scope._process_worker import ProcessWorker
from quiesce._scope._worker import Owner, ThreadWorker, Worker, WorkerReport

log = logging.getLogger("quiesce")

_live_scopes: weakref.WeakSet[Scope] = weakref.WeakSet()
_scope_ids = itertools.count(1)

StopOrigin = Literal["self", "failure", "above"]


@final
class Scope:
    """Owns workers; leaving the block stops whatever still runs, by the ladder."""

    def __init__(self, grace: float = 5.0, kill_after: float = 2.0, name: str | None = None,
                 interrupt_threads: bool = False, mp_context: BaseContext | str | None = None,
                 token: StopToken | None = None) -> None:
        self._grace = _validate.required_seconds("grace", grace)
        self._kill_after = _validate.required_seconds("kill_after", kill_after)
        if name is not None and not isinstance(name, str):
            raise TypeError(f"name must be a str or None, not {type(name).__name__}")
        if token is not None and not isinstance(token, StopToken):
            raise TypeError(f"token must be a StopToken or None, not {type(token).__name__}")
        self._mp_context = resolve_context(mp_context)
        self.name = name or f"scope-{next(_scope_ids)}"
        self._interrupt_threads = bool(interrupt_threads)
        self._token = (token if token is not None else current_token()).child()
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._hurry = threading.Event()
        self._workers: list[Worker] = []
        self._errors: list[BaseException] = []
        self._errors_raised = False
        self._origin: StopOrigin | None = None
        self._ladder_done = threading.Event()
        self._ladder_started = False
        self._entered = False
        self._context_token: ContextToken[StopToken | None] | None = None
        self._worker_ids = itertools.count(1)
        ref = weakref.ref(self)
        self._owner: Owner = _ScopeOwner(ref, self._token, self._grace, self._kill_after,
                                         self._interrupt_threads)
        self._token.on_stop(lambda: _call_weak(ref, Scope._begin_ladder))
        _live_scopes.add(self)

    # -- public API ---------------------------------------------------------
    @property
    def token(self) -> StopToken:
        return self._token

    @property
    def workers(self) -> list[Worker]:
        with self._lock:
            return list(self._workers)

    def thread(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Worker:
        """Run ``fn(*args, **kwargs)`` in a daemon thread this scope joins."""
        _validate.callable_target("fn", fn)
        with self._lock:
            self._check_open()
            return self._adopt(ThreadWorker(self._owner, self._worker_name(fn), fn, args, kwargs))

    def process(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Worker:
        """Run ``fn(*args, **kwargs)`` in a child process whose whole tree this scope ends."""
        _validate.callable_target("fn", fn)
        payload = pickle_target("scope.process", fn, args, kwargs)
        with self._lock:
            self._check_open()
            worker = ProcessWorker(self._owner, self._worker_name(fn), payload, self._mp_context)
            return self._adopt(worker)

    def popen(self, argv: Argv, /, **popen_kwargs: Any) -> Worker:
        """Run a command (``subprocess.Popen`` arguments) in its own process group.

        It gets SIGTERM to its group when the scope stops, SIGKILL to its
        whole tree after grace + kill_after; ``worker.popen`` is the Popen.
        """
        check_argv("scope.popen", argv)  # before command_name() reads argv
        with self._lock:
            self._check_open()
            worker = PopenWorker(self._owner, f"{self.name}/{command_name(argv)}-"
                                 f"{next(self._worker_ids)}", argv, popen_kwargs)
            return self._adopt(worker)

    def thread_pool(self, max_workers: int | None = None, *,
                    task_timeout: float | None = None) -> ThreadPool:
        """A ThreadPool this scope owns: stopped with the scope (same grace and kill_after)."""
        pool = ThreadPool(max_workers, task_timeout=task_timeout, grace=self._grace,
                          kill_after=self._kill_after)
        name = f"{self.name}/thread_pool-{next(self._worker_ids)}"
        self._adopt(PoolWorker(self._owner, name, pool))
        return pool

    def process_pool(self, max_workers: int | None = None, *,
                     task_timeout: float | None = None) -> ProcessPool:
        """A ProcessPool this scope owns, using the scope's ``mp_context``."""
        pool = ProcessPool(max_workers, task_timeout=task_timeout, grace=self._grace,
                           kill_after=self._kill_after, mp_context=self._mp_context)
        self._adopt(PoolWorker(self._owner, f"{self.name}/process_pool-{next(self._worker_ids)}",
                               pool))
        return pool

    def join(self, timeout: float | None = None) -> bool:
        """Wait for every worker to end; raise their errors, or Stopped if stopped from above.

        Returns False if ``timeout`` passed first, True otherwise.
        """
        timeout = _validate.seconds("timeout", timeout, allow_none=True)
        with self._changed:
            if not in_slices(lambda t: self._changed.wait_for(self._all_ended, t), timeout):
                return False
        if self._ladder_started:
            in_slices(self._ladder_done.wait, None)
        self._raise_outcome()
        return True

    def stop(self, reason: str | None = None) -> None:
        """Start the ladder on every worker; returns at once (``join`` waits)."""
        with self._lock:
            self._origin = self._origin or "self"
        self._token.stop(reason or f"scope {self.name!r} stopped")

    def report(self) -> list[WorkerReport]:
        """For each worker: how it ended and how long it took to stop."""
        return [w.report() for w in self.workers]

    def __enter__(self) -> Scope:
        if self._entered:
            raise RuntimeError(f"scope {self.name!r} was already entered; make a new Scope")
        self._entered = True
        self._context_token = _current.set(self._token)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> Literal[False]:
        if self._context_token is not None:
            _current.reset(self._context_token)
            self._context_token = None
        body_error = exc if exc is not None and not isinstance(exc, Stopped) else None
        with self._lock:
            self._origin = self._origin or "self"
        reason = f"scope {self.name!r} exited"
        if body_error is not None:
            reason = f"scope {self.name!r} body raised {type(body_error).__name__}"
        self._token.stop(reason)
        in_slices(self._ladder_done.wait, None)
        _live_scopes.discard(self)
        errors = [] if self._errors_raised else list(self._errors)
        self._errors_raised = True
        if body_error is not None:
            if errors:
                raise BaseExceptionGroup(f"scope {self.name!r} failed", [body_error, *errors])
            return False
        if errors:
            _raise_errors(self.name, errors)
        if exc is None and self._origin == "above":
            raise Stopped(self._token.reason)
        return False

    def __repr__(self) -> str:
        return f"<Scope {self.name!r} workers={len(self._workers)}>"

    # -- for worker kinds defined elsewhere (popen, pools) -----------------------
    def _adopt(self, worker: Worker) -> Worker:
        """Register and start ``worker``; on failure to start, forget it and re-raise."""
        with self._lock:
            self._check_open()
            self._workers.append(worker)
        try:
            worker._start()  # type: ignore[attr-defined]
        except BaseException:
            with self._lock:
                self._workers.remove(worker)
            raise
        return worker

    def _worker_name(self, fn: object) -> str:
        label = getattr(fn, "__qualname__", None) or type(fn).__name__
        return f"{self.name}/{label}-{next(self._worker_ids)}"

    # -- internals ------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._token.stopped:
            raise RuntimeError(f"scope {self.name!r} is stopping or closed; it takes no new work")

    def _all_ended(self) -> bool:
        return all(not w.alive or w.ended_by == "abandoned" for w in self._workers)

    def _worker_ended(self, worker: Worker) -> None:
        failed = worker.ended_by == "failed" and worker.exception is not None
        with self._changed:
            if failed and worker.exception is not None:
                self._errors.append(worker.exception)
                self._origin = self._origin or "failure"
            self._changed.notify_all()
        if failed:
            exc = worker.exception
            self._token.stop(f"worker {worker.name!r} failed: {type(exc).__name__}: {exc}")

    def _begin_ladder(self) -> None:
        with self._lock:
            if self._ladder_started:
                return
            self._ladder_started = True
            self._origin = self._origin or "above"
        threading.Thread(target=self._run_ladder, name=f"quiesce-ladder-{self.name}",
                         daemon=True).start()

    def _run_ladder(self) -> None:
        try:
            run_ladder(self.workers, grace=self._grace, kill_after=self._kill_after,
                       changed=self._changed, hurry=self._hurry, reason=self._token.reason)
            abandoned = [w.name for w in self.workers if w.ended_by == "abandoned"]
            if abandoned:
                log.warning("quiesce: scope %r abandoned threads still running: %s",
                            self.name, ", ".join(abandoned))
        finally:
            self._ladder_done.set()
            with self._changed:
                self._changed.notify_all()

    def _stop_worker(self, worker: Worker, reason: str | None) -> None:
        worker.token.stop(reason or f"worker {worker.name!r} stopped")

        def ladder() -> None:
            run_ladder([worker], grace=self._grace, kill_after=self._kill_after,
                       changed=self._changed, hurry=self._hurry, reason=worker.token.reason)

        threading.Thread(target=ladder, name=f"quiesce-ladder-{worker.name}", daemon=True).start()

    def _raise_outcome(self) -> None:
        if self._errors and not self._errors_raised:
            self._errors_raised = True
            _raise_errors(self.name, list(self._errors))
        if self._origin == "above" and self._token.stopped:
            raise Stopped(self._token.reason)

    def _hurry_ladder(self) -> None:
        """Skip what remains of the current grace (a second signal)."""
        self._hurry.set()
        with self._changed:
            self._changed.notify_all()


@final
class _ScopeOwner:
    """A scope as its workers see it (the ``Owner`` protocol), holding the scope weakly."""

    __slots__ = ("_scope", "grace", "interrupt_threads", "kill_after", "token")

    def __init__(self, scope: weakref.ref[Scope], token: StopToken, grace: float,
                 kill_after: float, interrupt_threads: bool) -> None:
        self._scope = scope
        self.token = token
        self.grace = grace
        self.kill_after = kill_after
        self.interrupt_threads = interrupt_threads

    def stop_worker(self, worker: Worker, reason: str | None) -> None:
        scope = self._scope()
        if scope is not None:
            scope._stop_worker(worker, reason)
        else:  # its scope has ended: the ladder already ran; the token is all there is
            worker.token.stop(reason)

    def worker_ended(self, worker: Worker) -> None:
        scope = self._scope()
        if scope is not None:
            scope._worker_ended(worker)

    def worker_changed(self) -> None:
        scope = self._scope()
        if scope is not None:
            with scope._changed:
                scope._changed.notify_all()


def _raise_errors(name: str, errors: list[BaseException]) -> None:
    if len(errors) == 1:
        raise errors[0]
    raise BaseExceptionGroup(f"{len(errors)} workers of scope {name!r} failed", errors)


def _call_weak(ref: weakref.ref[Scope], method: Callable[[Scope], None]) -> None:
    scope = ref()
    if scope is not None:
        method(scope)


def live_scopes() -> list[Scope]:
    return list(_live_scopes)


def hurry_all_scopes() -> None:
    """Every live scope skips the rest of its grace (used by a second signal)."""
    for scope in live_scopes():
        scope._hurry_ladder()


def _stop_all_at_exit() -> None:
    """Before the interpreter joins threads and processes: end every open scope."""
    for scope in live_scopes():
        try:
            scope._token.stop("interpreter exiting")
            scope._ladder_done.wait()
        except Exception:
            log.exception("quiesce: stopping scope %r at exit failed", scope.name)


def _forget_inherited_scopes() -> None:
    # A forked child holds copies of its parent's scopes: they own nothing here.
    global _live_scopes
    _live_scopes = weakref.WeakSet()


threading._register_atexit(_stop_all_at_exit)  # type: ignore[attr-defined]
os.register_at_fork(after_in_child=_forget_inherited_scopes)
