"""Scope: structured ownership of threads, processes and subprocesses.

Nothing a scope starts outlives it. The scope's token is a child of the
token current where it is created (an enclosing scope body or worker, else
the process root), so a stop anywhere above reaches every worker below.
Any stop of that token (``scope.stop()``, leaving the block, a worker's
failure, a signal or an outer scope) begins the ladder once; when and in
which thread it runs is ``_scope_ladder``'s part (``ScopeLadder``), and the
``async with`` half is ``_async_scope``'s. Here: the public surface,
starting workers, recording their ends and errors, and what leaving the
block raises. Workers reach the scope only through a ``ScopeOwner``
(``_scope_owner``), which holds it weakly; open scopes are registered in
``_live_scopes`` so that the interpreter's exit ends them.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
import weakref
from collections.abc import Callable
from multiprocessing.context import BaseContext
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, final

from quiesce._core import _validate
from quiesce._core._context import CurrentReset, _current, current_token
from quiesce._core._errors import Stopped
from quiesce._core._main_wait import in_slices
from quiesce._core._token import StopToken
from quiesce._pools._processpool import ProcessPool
from quiesce._pools._threadpool import ThreadPool
from quiesce._proc._command import Argv, check_argv, command_name
from quiesce._proc._mp_context import resolve_context
from quiesce._proc._pickling import pickle_call
from quiesce._proc._wants_token import wants_token
from quiesce._scope import _live_scopes
from quiesce._scope._async_scope import AsyncScope
from quiesce._scope._pool_in_scope import PoolWorker
from quiesce._scope._popen_worker import PopenWorker
from quiesce._scope._process_worker import ProcessWorker
from quiesce._scope._scope_ladder import ScopeLadder, StopOrigin
from quiesce._scope._scope_owner import ScopeOwner
from quiesce._scope._worker import Owner, ThreadWorker, Worker, WorkerReport

if TYPE_CHECKING:  # asyncio is imported only by programs that use it
    import asyncio
    from collections.abc import Coroutine

log = logging.getLogger("quiesce")

_scope_ids = itertools.count(1)


@final
class Scope(ScopeLadder, AsyncScope):
    """Owns workers; leaving the block stops whatever still runs, by the ladder.

    Start threads, processes, subprocesses and pools through the scope;
    nothing it starts outlives it. Leaving the `with` block (normally, by an
    exception, or after `stop()`) takes every worker still running through
    **the ladder**, all workers in parallel:

    1. stop the worker's token (cooperative; subprocesses get SIGTERM to
       their process group, since they cannot see a token);
    2. after `grace` seconds: SIGTERM to processes (inside a quiesce child it
       raises `Stopped` in the main thread, so `finally` blocks run);
       `Stopped` raised in threads if `interrupt_threads=True`;
    3. after `kill_after` more seconds: SIGKILL to every process of the
       worker's tree, grandchildren and `setsid` escapers included, then
       reap. A thread still running is *abandoned*: reported, and never
       blocking interpreter exit.

    So leaving a scope takes at most about `grace + kill_after` seconds.
    A worker's exception stops the scope (its siblings get the ladder) and
    is raised when the block is left or by `join()`; several are raised as
    an `ExceptionGroup`. A stop from above (a signal under `handle_signals`,
    an enclosing scope) raises `Stopped` there instead.

    In a coroutine, use `async with`: leaving then waits for the ladder
    without blocking the event loop, `task()` starts asyncio tasks the
    scope owns, and a stop the block did not cause cancels the block's
    body (see the [asyncio guide](../asyncio.md)).

    Scopes nest: a scope's token is a child of `current_token()` where it
    is created, and inside the block `current_token()` is the scope's
    token, so a stop anywhere above reaches every worker below.

    Args:
        grace: Seconds between the token stop and SIGTERM; finite, >= 0.
        kill_after: Seconds between SIGTERM and SIGKILL; finite, >= 0.
        name: Names the scope in worker names, reports and logs; by default
            `scope-N`.
        interrupt_threads: If True, a thread still running `grace` seconds
            after its stop gets `Stopped` raised in it asynchronously (it
            takes effect between two bytecodes, never inside a C call).
        mp_context: How `process()` and `process_pool()` start processes: a
            start method name (`"fork"`, `"forkserver"`, `"spawn"`), a
            `multiprocessing` context, or None for the default method.
        token: The parent of the scope's token instead of
            `current_token()`.

    Raises:
        ValueError: `grace` or `kill_after` is negative, NaN or infinite, or
            `mp_context` names an unknown start method.
        TypeError: `name`, `token` or `mp_context` has the wrong type.

    Example:
        ```python
        import quiesce

        def poll():
            while not quiesce.stopped():
                quiesce.sleep(10)           # wakes at once on stop

        def crunch(token):                  # gets the worker's token
            while not token.stopped:
                ...

        with quiesce.Scope(grace=5, kill_after=2, name="job") as scope:
            scope.thread(poll)
            scope.process(crunch)
            scope.join(timeout=60)          # natural completion, if any
        for line in scope.report():
            print(line)                     # job/poll-1 [thread]: stopped in 0 ms
        ```
    """

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
        # Workers that have not recorded their end: only the last end (or a failure, or
        # an end some worker's own ladder waits for) wakes the threads waiting on _changed,
        # so 100 ending threads do not wake the ladder 100 times.
        self._running: set[Worker] = set()
        self._errors: list[BaseException] = []
        self._errors_raised = False
        self._origin: StopOrigin | None = None
        self._entered = False
        self._context_token: CurrentReset | None = None
        self._worker_ids = itertools.count(1)
        self._init_ladder()
        self._init_async()
        ref = weakref.ref(self)
        self._owner: Owner = ScopeOwner(ref, self._token, self._grace, self._kill_after,
                                        self._interrupt_threads)
        self._token.on_stop(lambda: _call_weak(ref, Scope._begin_ladder))
        _live_scopes.add(self)

    # -- public API ---------------------------------------------------------
    @property
    def token(self) -> StopToken:
        """The scope's token; stopping it starts the ladder, like `stop()`.

        Every worker's token is a child of it. Inside the `with` block it is
        also `current_token()`.
        """
        return self._token

    @property
    def workers(self) -> list[Worker]:
        """Every worker started so far (running or ended), in start order; a copy."""
        with self._lock:
            return list(self._workers)

    def thread(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Worker:
        """Run `fn(*args, **kwargs)` in a thread this scope owns.

        The thread is a daemon that the scope, not the interpreter, joins,
        so a stuck thread can never hang interpreter exit. Its token is a
        child of the scope's: `current_token()` inside `fn`, and passed as
        the keyword `token` if `fn` declares a parameter of that name (and
        `kwargs` has none). The return value is `worker.result`; an
        exception stops the scope and is raised by `join()` / leaving the
        block.

        Args:
            fn: The target.
            *args: Positional arguments for `fn`.
            **kwargs: Keyword arguments for `fn`.

        Returns:
            The running `Worker`.

        Raises:
            TypeError: `fn` is not callable.
            RuntimeError: The scope is stopping or closed.

        Example:
            ```python
            def fetch(url, token):
                while not token.wait(5):    # stop-aware sleep
                    ...
            worker = scope.thread(fetch, "https://example.org")
            ```
        """
        _validate.callable_target("fn", fn)
        with self._lock:
            self._check_open()
            return self._adopt(ThreadWorker(self._owner, self._worker_name(fn), fn, args, kwargs))

    def process(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Worker:
        """Run `fn(*args, **kwargs)` in a child process whose whole tree this scope ends.

        `fn`, `args` and `kwargs` are pickled now, whatever the start method
        (the scope's `mp_context`), so an unpicklable target fails here and
        not later in the child. The child gets the worker's token
        (`current_token()`, or the `token` keyword as for `thread`); on the
        ladder's SIGTERM `Stopped` is raised in its main thread, so its
        `finally` blocks run. It dies with its owner, even if the owner is
        SIGKILLed. The return value, if picklable, is `worker.result`; the
        exit status is `worker.exitcode`.

        Args:
            fn: The target; importable by name for the spawn and forkserver
                methods (not a lambda or a local function).
            *args: Positional arguments for `fn`, picklable.
            **kwargs: Keyword arguments for `fn`, picklable.

        Returns:
            The running `Worker`.

        Raises:
            TypeError: `fn` is not callable, or it or its arguments cannot
                be pickled (the message names the target and says why).
            RuntimeError: The scope is stopping or closed.

        Example:
            ```python
            def crunch(path, token):
                try:
                    while not token.stopped:
                        step(path)
                finally:
                    flush_results()         # runs on stop and on SIGTERM

            worker = scope.process(crunch, "/data/in")
            ```
        """
        _validate.callable_target("fn", fn)
        payload, tokens = pickle_call("scope.process", fn, args, kwargs,
                                      self._mp_context.get_start_method())
        with self._lock:
            self._check_open()
            worker = ProcessWorker(self._owner, self._worker_name(fn), payload, self._mp_context,
                                   tokens=tokens,
                                   pass_token=wants_token(fn) and "token" not in kwargs)
            return self._adopt(worker)

    def popen(self, argv: Argv, /, **popen_kwargs: Any) -> Worker:
        """Run a command in its own process group; the scope ends its whole tree.

        A command cannot see a token, so its ladder is shifted: SIGTERM (then
        SIGCONT) to its process group as soon as the scope stops, SIGKILL to
        its whole tree (grandchildren and `setsid` escapers included) after
        `grace + kill_after`. When the command exits, whatever it left
        running gets the rest of the ladder. `worker.popen` is the
        `subprocess.Popen`; `worker.exitcode` its status once reaped.

        Args:
            argv: The command, a list of str/path (or a str, as for Popen).
            **popen_kwargs: Passed to `subprocess.Popen` (`stdout`, `cwd`,
                `env`...); `preexec_fn` is refused.

        Returns:
            The running `Worker`.

        Raises:
            FileNotFoundError: The command does not exist (the message names it).
            PermissionError: The command is not executable.
            TypeError: `argv` (or one of its items) has the wrong type.
            ValueError: `argv` is empty, or `preexec_fn` was given.
            RuntimeError: The scope is stopping or closed.

        Example:
            ```python
            with quiesce.Scope(grace=10, kill_after=5) as scope:
                encoder = scope.popen(["ffmpeg", "-i", "in.mp4", "out.webm"])
                scope.join()
            print(encoder.exitcode)
            ```
        """
        check_argv("scope.popen", argv)  # before command_name() reads argv
        with self._lock:
            self._check_open()
            worker = PopenWorker(self._owner, f"{self.name}/{command_name(argv)}-"
                                 f"{next(self._worker_ids)}", argv, popen_kwargs)
            return self._adopt(worker)

    def thread_pool(self, max_workers: int | None = None, *,
                    task_timeout: float | None = None) -> ThreadPool:
        """A `ThreadPool` this scope owns: stopped with the scope (same grace and kill_after).

        `scope.join()` waits until the pool has no work; when the scope
        stops, the pool runs its bounded `stop()`.

        Args:
            max_workers: Threads at most; None: `min(32, cpu_count + 4)`.
            task_timeout: Seconds a task may run before its future fails with
                `TimeoutError` and the task is stopped; None: no limit.

        Returns:
            The pool (already running; no `with` needed).

        Raises:
            ValueError: `max_workers` < 1, or `task_timeout` <= 0 or not finite.
            RuntimeError: The scope is stopping or closed.

        Example:
            ```python
            with quiesce.Scope(grace=2) as scope:
                pool = scope.thread_pool(8, task_timeout=30)
                futures = [pool.submit(fetch, url) for url in urls]
                scope.join()
            ```
        """
        pool = ThreadPool(max_workers, task_timeout=task_timeout, grace=self._grace,
                          kill_after=self._kill_after)
        name = f"{self.name}/thread_pool-{next(self._worker_ids)}"
        self._adopt(PoolWorker(self._owner, name, pool))
        return pool

    def process_pool(self, max_workers: int | None = None, *,
                     task_timeout: float | None = None) -> ProcessPool:
        """A `ProcessPool` this scope owns, using the scope's `mp_context`.

        Like `thread_pool`: stopped with the scope, with its grace and
        kill_after.

        Args:
            max_workers: Processes at most; None: `os.cpu_count()`.
            task_timeout: Seconds a task may run before its future fails with
                `TimeoutError` and the task is ended by the ladder; None: no
                limit.

        Returns:
            The pool (already running; no `with` needed).

        Raises:
            ValueError: `max_workers` < 1, or `task_timeout` <= 0 or not finite.
            RuntimeError: The scope is stopping or closed.

        Example:
            ```python
            with quiesce.Scope(grace=5, kill_after=2) as scope:
                pool = scope.process_pool(4)
                total = sum(pool.map(crunch, chunks))
            ```
        """
        pool = ProcessPool(max_workers, task_timeout=task_timeout, grace=self._grace,
                           kill_after=self._kill_after, mp_context=self._mp_context)
        self._adopt(PoolWorker(self._owner, f"{self.name}/process_pool-{next(self._worker_ids)}",
                               pool))
        return pool

    def task(self, coro: Coroutine[Any, Any, Any], /, *,
             name: str | None = None) -> asyncio.Task[Any]:
        """Run `coro` as an asyncio task this scope owns.

        Only in a scope entered with `async with`, from a coroutine on the
        same loop. Inside the task `current_token()` is its own token (a
        child of the scope's, local to this process: pass `token.child()`
        to a process). The scope's stop cancels the task; one that swallows
        the cancellation is cancelled once more and reported `abandoned`
        after `grace`, and no longer waited for. If the task raises, the
        scope stops (its siblings and the block's body are cancelled) and
        leaving the block raises the error (several: an `ExceptionGroup`);
        ending by `Stopped` or by a cancellation is a clean end.

        Args:
            coro: A coroutine object (`fetch(url)`, not `fetch`).
            name: The task's name in the report; default: the coroutine's.

        Returns:
            The `asyncio.Task`: await it for its result.

        Raises:
            TypeError: `coro` is not a coroutine object, or `name` not a str.
            RuntimeError: The scope was not entered with `async with` on this
                loop, or it is stopping or closed.

        Example:
            ```python
            async with quiesce.Scope(grace=2.0) as scope:
                scope.task(fetch_forever(queue))     # cancelled when the block ends
                scope.process(crunch, data)          # the usual ladder
                total = await scope.task(compute())  # a task's result
            ```
        """
        return self._start_task(coro, name)

    def join(self, timeout: float | None = None) -> bool:
        """Wait until every worker has ended (pools: until they have no work).

        Use it for natural completion; leaving the block stops whatever is
        still running. In the main thread it waits in short slices, so
        signal handlers run.

        Args:
            timeout: Seconds to wait at most; None waits for ever.

        Returns:
            True once all workers have ended, False if `timeout` passed
            first (the workers keep running).

        Raises:
            BaseException: The exception a worker failed with (the first
                one); several failures as a `BaseExceptionGroup`. Each error
                is raised once, by `join` or by leaving the block.
            Stopped: The scope was stopped from above (a signal, an
                enclosing scope), after its ladder has run.
            ValueError: `timeout` is negative, NaN or infinite.

        Example:
            ```python
            with quiesce.Scope() as scope:
                for item in items:
                    scope.thread(handle, item)
                if not scope.join(timeout=60):
                    print("too slow; leaving the block stops them")
            ```
        """
        timeout = _validate.seconds("timeout", timeout, allow_none=True)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            self._run_ladder_if_pending()
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            with self._changed:
                if not in_slices(lambda t: self._changed.wait_for(
                        lambda: self._all_ended() or self._ladder_inline, t), remaining):
                    return False
                if not self._ladder_inline:
                    break
        if self._ladder_started:
            self._wait_for_ladder()
        self._raise_outcome()
        return True

    def stop(self, reason: str | None = None) -> None:
        """Start the ladder on every worker; returns at once (`join` waits).

        Safe to call from a worker of this very scope, from a signal
        handler's helper, or twice. After it, the scope takes no new work.

        Args:
            reason: The stop reason the workers' tokens carry; by default
                `"scope 'NAME' stopped"`.

        Example:
            ```python
            def watchdog(scope):
                if disk_full():
                    scope.stop("disk full")     # every sibling gets the ladder

            with quiesce.Scope() as scope:
                scope.thread(watchdog, scope)
                ...
            ```
        """
        with self._lock:
            self._origin = self._origin or "self"
        self._token.stop(reason or f"scope {self.name!r} stopped")

    def report(self) -> list[WorkerReport]:
        """How each worker ended and how long it took to stop, in start order.

        Call it after the block (or `join`) to see what the ladder had to
        do; a worker still running reports `ended_by=None`.

        Returns:
            One `WorkerReport` per worker (pools count as one worker).

        Example:
            ```python
            for line in scope.report():
                print(line)
            # job/crunch-1 [process]: terminated in 504 ms exit 0
            # job/poll-2 [thread]: stopped in 0 ms
            ```
        """
        return [w.report() for w in self.workers]

    def __enter__(self) -> Scope:
        if self._entered:
            raise RuntimeError(f"scope {self.name!r} was already entered; make a new Scope")
        self._entered = True
        self._context_token = _current.set(self._token)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> Literal[False]:
        self._leaving_thread = threading.get_ident()  # a ladder we begin, we run (_begin_ladder)
        try:
            body_error = self._begin_exit(exc)
        except BaseException:  # KeyboardInterrupt while the stop began the ladder
            self._leaving_thread = None
            self._rescue_ladder()
            raise
        finally:
            self._leaving_thread = None
        self._wait_for_ladder()
        return self._end_exit(exc, body_error)

    def _begin_exit(self, exc: BaseException | None) -> BaseException | None:
        """Leaving the block: stop the token; returns the body's own error, if any."""
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
        return body_error

    def _end_exit(self, exc: BaseException | None,
                  body_error: BaseException | None) -> Literal[False]:
        """The ladder is done: raise the body's and the workers' errors, or Stopped."""
        _live_scopes.discard(self)
        errors = [] if self._errors_raised else list(self._errors)
        self._errors_raised = True
        if body_error is not None:
            errors = [e for e in errors if e is not body_error]  # awaited task re-raised
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
            self._running.add(worker)
        try:
            worker._start()  # type: ignore[attr-defined]
        except BaseException:
            with self._lock:
                self._workers.remove(worker)
                self._running.discard(worker)
            raise
        return worker

    def _worker_name(self, fn: object) -> str:
        label = getattr(fn, "__qualname__", None) or type(fn).__name__
        return f"{self.name}/{label}-{next(self._worker_ids)}"

    # -- internals ------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._token.stopped or self._ladder_started:
            raise RuntimeError(f"scope {self.name!r} is stopping or closed; it takes no new work")

    def _all_ended(self) -> bool:
        # A worker is marked done a moment before the scope records its ending
        # (its error): `join` must not look in between and miss the error.
        return all(
            w.ended_by == "abandoned"
            or (not w.alive and (w.ended_by != "failed" or w in self._reported))
            for w in self._workers
        )

    def _worker_ended(self, worker: Worker) -> None:
        failed = worker.ended_by == "failed" and worker.exception is not None
        with self._changed:
            if failed and worker.exception is not None:
                self._errors.append(worker.exception)
                self._origin = self._origin or "failure"
            self._reported.add(worker)  # its error, if any, is recorded
            self._running.discard(worker)
            if failed or not self._running or self._solo_ladders:
                self._changed.notify_all()
        if self._async_waiters:
            self._wake_async()
        if failed:
            exc = worker.exception
            self._token.stop(f"worker {worker.name!r} failed: {type(exc).__name__}: {exc}")

    def _worker_changed(self) -> None:
        """Something ``join`` waits on changed (a pool became idle)."""
        with self._changed:
            self._changed.notify_all()
        if self._async_waiters:
            self._wake_async()

    def _end_at_exit(self) -> None:
        """The interpreter is exiting with this scope still open: end it, by its ladder."""
        self._token.stop("interpreter exiting")
        self._wait_for_ladder()

    def _raise_outcome(self) -> None:
        if self._errors and not self._errors_raised:
            self._errors_raised = True
            _raise_errors(self.name, list(self._errors))
        if self._origin == "above" and self._token.stopped:
            raise Stopped(self._token.reason)


def _raise_errors(name: str, errors: list[BaseException]) -> None:
    if len(errors) == 1:
        raise errors[0]
    raise BaseExceptionGroup(f"{len(errors)} workers of scope {name!r} failed", errors)


def live_scopes() -> list[Scope]:
    """This process's open scopes."""
    return [s for s in _live_scopes.live_scopes() if isinstance(s, Scope)]


def _call_weak(ref: weakref.ref[Scope], method: Callable[[Scope], None]) -> None:
    scope = ref()
    if scope is not None:
        method(scope)


