"""Worker: one thread, process or subprocess owned by a Scope, and how it ended.

A worker knows how to take each step of the ladder on itself
(``_on_stop_requested``, ``_terminate``, ``_kill``); the ladder (see
_ladder) decides when. Each worker records its ending once, from what it
can observe: the target's return or exception, the exit status, and which
ladder step had already been taken.
"""

from __future__ import annotations

import dataclasses
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any, Protocol

from quiesce._core import _validate
from quiesce._core._context import _current, caller_deadline
from quiesce._core._deadline_timer import call_at
from quiesce._core._ended_by import EndedBy
from quiesce._core._errors import Stopped
from quiesce._core._latch import Latch
from quiesce._core._main_wait import in_slices
from quiesce._core._thread_interrupt import ThreadGate
from quiesce._core._token import StopToken
from quiesce._proc._wants_token import wants_token

_done_lock = threading.Lock()


class Done:
    """A worker's end, as a one-shot flag: `threading.Event`'s is_set/set/wait, cheaper.

    Every worker's end sets it, but a waiter (`join`) is rare: here `set`
    is a store, and a latch (_latch: an Event without its Condition) is made
    only for a waiter (under one module lock, then the flag is read again,
    so a set racing the first waiter is never missed).
    """

    __slots__ = ("_latch", "flag")

    def __init__(self) -> None:
        self.flag = False
        self._latch: Latch | None = None

    def is_set(self) -> bool:
        return self.flag

    def set(self) -> None:
        self.flag = True
        latch = self._latch
        if latch is not None:
            latch.open()

    def wait(self, timeout: float | None = None) -> bool:
        if self.flag:
            return True
        with _done_lock:
            if self._latch is None:
                self._latch = Latch()
            latch = self._latch
        return self.flag or latch.wait(timeout)


class Owner(Protocol):
    """All a worker may ask of the scope that owns it.

    Workers of every kind (threads, processes, subprocesses, pools) take
    their settings from it and tell it when they end; they never touch the
    scope's own state. A scope hands out an ``Owner`` that holds it weakly,
    so a worker never keeps its scope alive (no reference cycle: a scope's
    fds and threads go when it does, not when the garbage collector runs).
    """

    token: StopToken
    """The scope's token: a worker's own token is a child of it."""
    grace: float
    kill_after: float
    interrupt_threads: bool

    def stop_worker(self, worker: Worker, reason: str | None) -> None:
        """Run the ladder on ``worker`` alone, in the background."""

    def worker_ended(self, worker: Worker) -> None:
        """``worker`` has recorded its ending (a failure stops the scope)."""

    def worker_changed(self) -> None:
        """Something the scope waits on changed (a pool became idle)."""



@dataclasses.dataclass(frozen=True)
class WorkerReport:
    """How one worker ended: an entry of `Scope.report()`.

    Its `str()` is one readable line, e.g.
    `job/crunch-1 [process]: terminated in 504 ms exit 0`.

    Attributes:
        name: The worker's name (`SCOPE/TARGET-N`).
        kind: `"thread"`, `"process"`, `"subprocess"` or `"pool"`.
        ended_by: `"finished"` (returned, never asked to stop), `"failed"`
            (raised, or a process died), `"stopped"` (ended by itself after
            its token was stopped), `"terminated"` (ended by the ladder's
            SIGTERM, or `Stopped` raised in a thread), `"killed"` (SIGKILL),
            `"abandoned"` (a thread still running after the ladder); None
            while it runs. For a pool: the hardest ending any task needed.
        stop_ms: Milliseconds from the stop request to the end; None if it
            was never asked to stop or has not ended.
        exitcode: A process's exit status (negative: killed by that signal);
            None for threads and pools.
        error: The exception it failed with, or None.

    Example:
        ```python
        hard = [r for r in scope.report() if r.ended_by in ("killed", "abandoned")]
        for r in hard:
            log.warning("%s ignored its stop for %.0f ms", r.name, r.stop_ms or 0)
        ```
    """

    name: str
    kind: str
    ended_by: EndedBy | None
    stop_ms: float | None
    exitcode: int | None
    error: BaseException | None

    def __str__(self) -> str:
        parts = [f"{self.name} [{self.kind}]: {self.ended_by or 'running'}"]
        if self.stop_ms is not None:
            parts.append(f"in {self.stop_ms:.0f} ms")
        if self.exitcode is not None:
            parts.append(f"exit {self.exitcode}")
        if self.error is not None:
            parts.append(f"({type(self.error).__name__}: {self.error})")
        return " ".join(parts)


class Worker:
    """A thread, process, subprocess or pool owned by a `Scope`.

    Made by `Scope.thread`, `Scope.process`, `Scope.popen` (and, for pools,
    `Scope.thread_pool` / `Scope.process_pool`, which return the pool);
    never constructed directly. A popen worker also has `.popen`, its
    `subprocess.Popen`.

    Example:
        ```python
        with quiesce.Scope() as scope:
            worker = scope.process(square, 42)   # def square(x): return x * x
            worker.join(timeout=10)
        print(worker.ended_by, worker.exitcode, worker.result)
        # finished 0 1764
        ```
    """

    kind = "worker"

    def __init__(self, owner: Owner, name: str, token: StopToken) -> None:
        self._owner = owner
        self._name = name
        self._token = token
        self._done = Done()
        self._ended_by: EndedBy | None = None
        self._result: Any = None
        self._exception: BaseException | None = None
        self._ended_at: float | None = None
        self._ladder_step = 0  # 1 token stopped, 2 terminated, 3 killed
        deadline = caller_deadline(token)  # started in a deadline block: ended at its deadline
        if deadline is not None:
            token._deadline = deadline  # travels with the token into a child process
            ref = weakref.ref(self)  # the timer must not keep the worker alive
            call_at(deadline, lambda: _deadline_passed(ref))

    # -- public -----------------------------------------------------------
    @property
    def name(self) -> str:
        """`SCOPE/TARGET-N`: the scope's name, the target's (or command's) name, a number."""
        return self._name

    @property
    def token(self) -> StopToken:
        """The worker's own token, a child of its scope's."""
        return self._token

    @property
    def alive(self) -> bool:
        """True until the worker has ended (for a process: until it is reaped).

        An abandoned thread still counts as alive, though its scope no longer
        waits for it.
        """
        return not self._done.flag

    @property
    def result(self) -> Any:
        """The target's return value once finished (None before, or if it failed)."""
        return self._result

    @property
    def exception(self) -> BaseException | None:
        """The exception the worker failed with, if any."""
        return self._exception

    @property
    def exitcode(self) -> int | None:
        """A process's exit status once reaped: negative N if killed by signal N.

        None for threads, and while the process runs.
        """
        return None

    @property
    def ended_by(self) -> EndedBy | None:
        """``finished``, ``failed``, ``stopped``, ``terminated``, ``killed``, ``abandoned``."""
        return self._ended_by

    def join(self, timeout: float | None = None) -> bool:
        """Wait until the worker has ended.

        Does not raise the worker's exception (see `exception`, or
        `Scope.join`).

        Args:
            timeout: Seconds to wait at most; None waits for ever.

        Returns:
            True if it has ended, False if `timeout` passed first.

        Raises:
            ValueError: `timeout` is negative, NaN or infinite.
        """
        return in_slices(self._done.wait, _validate.seconds("timeout", timeout, allow_none=True))

    def stop(self, reason: str | None = None) -> None:
        """Stop this worker alone by the ladder, in the background; `join` to wait.

        Its token is stopped at once; the rest of the ladder (SIGTERM after
        the scope's grace, SIGKILL after kill_after) follows in a helper
        thread. Its siblings keep running.

        Args:
            reason: The reason its token carries.

        Example:
            ```python
            slow = scope.thread(fetch, url)
            if not slow.join(timeout=30):
                slow.stop("took more than 30 s")
            ```
        """
        self._owner.stop_worker(self, reason)

    def report(self) -> WorkerReport:
        """How this worker ended so far (its line of `Scope.report()`)."""
        stop_ms = None
        requested = self._token._stopped_at  # the token notes it: no callback per worker
        if requested is not None and self._ended_at is not None:
            stop_ms = max(0.0, (self._ended_at - requested) * 1000.0)
        return WorkerReport(self._name, self.kind, self._ended_by, stop_ms, self.exitcode,
                            self._exception)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._name!r} {self._ended_by or 'running'}>"

    # -- the ladder's steps, overridden per kind ------------------------------
    def _on_stop_requested(self) -> None:
        """Step 1 beyond the token (subprocesses: SIGTERM to their group)."""

    def _terminate(self) -> None:
        """Step 2, after grace."""

    def _kill(self) -> None:
        """Step 3, after kill_after."""

    def _abandon(self) -> None:
        """After the ladder: a worker still alive cannot be ended (threads)."""

    def _wait_ended(self, timeout: float | None) -> bool:
        return self._done.wait(timeout)

    # -- bookkeeping ------------------------------------------------------------
    def _finish(self, ended_by: EndedBy, result: Any = None,
                exception: BaseException | None = None) -> None:
        if self._done.flag:
            return
        if self._ended_by == "abandoned":  # it ended after its scope gave up on it
            self._result, self._exception = result, exception
            self._done.set()
            return
        self._ended_at = time.monotonic()
        self._ended_by, self._result, self._exception = ended_by, result, exception
        self._done.set()
        self._owner.worker_ended(self)


def _deadline_passed(ref: weakref.ref[Worker]) -> None:
    worker = ref()
    if worker is not None and worker.alive:
        worker.stop("deadline passed")


class ThreadWorker(Worker):
    """A daemon thread running ``fn``; its scope, not the interpreter, joins it."""

    kind = "thread"

    def __init__(self, owner: Owner, name: str, fn: Callable[..., Any],
                 args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        # Not a linked child of the scope's token: every stop of that token begins the
        # scope's ladder, which stops each worker's token first (Scope._begin_ladder), and
        # a scope stopping takes no new worker. A link would only be one more callback
        # per worker at each stop, and one more registration at each start. The
        # worker's deadline is its scope's, like a child's.
        token = StopToken()
        token._deadline = owner.token.deadline
        super().__init__(owner, name, token)
        if wants_token(fn) and "token" not in kwargs:
            kwargs = {**kwargs, "token": self._token}
        # Only a scope that may interrupt its threads needs the gate (a lock per thread).
        self._gate = ThreadGate() if owner.interrupt_threads else None
        self._thread = threading.Thread(target=self._run, args=(fn, args, kwargs),
                                        name=name, daemon=True)

    def _start(self) -> None:
        self._thread.start()

    def _run(self, fn: Callable[..., Any], args: tuple[Any, ...],
             kwargs: dict[str, Any]) -> None:
        outcome: tuple[EndedBy, Any, BaseException | None] | None = None
        gate = self._gate
        try:
            try:
                # The thread's own context, which ends with the thread: nothing to reset.
                _current.set(self._token)
                if gate is None:
                    value = fn(*args, **kwargs)
                else:
                    gate.arm()
                    try:
                        value = fn(*args, **kwargs)
                    finally:
                        gate.disarm()
                outcome = ("stopped" if self._token.stopped else "finished", value, None)
            except Stopped:
                interrupted = gate is not None and gate.interrupted
                outcome = ("terminated" if interrupted else "stopped", None, None)
            except BaseException as exc:
                outcome = ("failed", None, exc)
        except Stopped:  # an interrupt that landed between the target and disarm
            outcome = outcome or ("terminated", None, None)
        finally:
            del fn, args, kwargs
            self._finish(*(outcome or ("terminated", None, None)))

    def _terminate(self) -> None:
        if self._gate is not None:
            self._gate.interrupt(Stopped)

    def _abandon(self) -> None:
        self._ended_at = time.monotonic()
        self._ended_by = "abandoned"
