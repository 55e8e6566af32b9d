"""ScopeLadder: when, and in which thread, a Scope's ladder runs (half of Scope).

Any stop of a scope's token (leaving the block, ``scope.stop()``, a
worker's failure, a stop from above) begins the ladder once. The stop
itself never blocks, so the ladder runs in a thread of its own; ``join``
and ``__exit__`` wait for it. Two exceptions:

* When leaving a ``with`` block is what stops the scope, the leaving thread
  runs the ladder itself: it would only wait for the ladder thread, whose
  start costs more than most ladders. In the main thread the ladder waits
  in 50 ms slices, so signal handlers run. If a handler's exception
  (KeyboardInterrupt) interrupts it, the rest moves to a thread at the same
  deadlines (``run_ladder(began=...)``) before the exception goes on; so
  it does if the exception lands while the stop is still beginning the
  ladder (``_rescue_ladder``).
* If the ladder thread cannot be started (a thread limit, no memory), the
  ladder is never lost: it is left pending, and the thread waiting for the
  scope (``__exit__``, ``join``, the interpreter's exit) runs it.

``worker.stop()`` runs a ladder on that worker alone, in a thread of its
own; the scope's end waits for it too. A second signal hurries every open
ladder past the rest of its grace.

Scope's own state is declared here and set by ``Scope.__init__``; the
methods of its asyncio half (``AsyncScope``) are declared, not stubbed,
since this class comes first in Scope's bases.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal

from quiesce._core._main_wait import in_slices
from quiesce._core._token import StopToken
from quiesce._scope._ladder import run_ladder
from quiesce._scope._ladder_runners import run_ladder_job
from quiesce._scope._worker import Worker

if TYPE_CHECKING:
    import asyncio

log = logging.getLogger("quiesce")

StopOrigin = Literal["self", "failure", "above"]
"""Who stopped a scope: itself (left, ``stop()``), a worker's failure, or from above."""


class ScopeLadder:
    """The ladder's life within a Scope: begun once, run in a thread or by a waiter."""

    # Scope's own state, used here (set by Scope.__init__).
    name: str
    _token: StopToken
    _grace: float
    _kill_after: float
    _lock: threading.RLock
    _changed: threading.Condition
    _hurry: threading.Event
    _workers: list[Worker]
    _running: set[Worker]
    _origin: StopOrigin | None
    # AsyncScope's, which follows this class in Scope's bases.
    _async_waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]]
    _wake_async: Callable[[], None]
    _wake_hurried: Callable[[], None]

    def _init_ladder(self) -> None:
        self._solo_ladders = 0  # worker.stop() ladders running
        self._ladder_done = threading.Event()
        self._ladder_started = False
        self._ladder_inline = False  # started, but no thread runs it: a waiter will
        self._ladder_handed = False  # a thread runs it, or a waiter was told to
        self._ladder_began: float | None = None
        self._leaving_thread: int | None = None  # the thread in __exit__, while it stops us

    def _begin_ladder(self) -> None:
        with self._lock:
            if self._ladder_started:
                return
            self._ladder_started = True
            self._origin = self._origin or "above"
            workers = list(self._workers)
        # Stop every worker's token here, before the ladder runs anywhere: a thread or
        # runner hand-off would otherwise delay every worker's wake-up. Task tokens have
        # no link to the scope's token: this is what stops them. A thread's or process's
        # linked token stops once, so its link and the ladder's first step find it stopped.
        reason = self._token.reason
        for worker in workers:
            worker.token.stop(reason)
        self._ladder_began = time.monotonic()
        if self._leaving_thread == threading.get_ident():
            self._leave_ladder_to_waiter()  # __exit__ runs it next, in this very thread
            return
        self._start_ladder_thread()

    def _rescue_ladder(self) -> None:
        """The thread leaving the block was interrupted (a signal handler's
        KeyboardInterrupt) while its stop began the ladder: before the
        exception goes on, make sure the ladder still runs, in a thread.

        The interruption can land before the scope's stop callback ran (the
        token's callbacks claimed, then lost with the exception), between the
        workers' stops, or after the ladder was left to this very thread,
        which is about to leave instead of running it.
        """
        with self._lock:
            begun = self._ladder_started
            pending, self._ladder_inline = self._ladder_inline, False
            handed = self._ladder_handed and not pending
        if not begun:
            self._token.stop(f"scope {self.name!r} exited")  # if the interruption came first
            self._begin_ladder()  # unless that stop began it; not the leaving thread now
        elif not handed:
            if self._ladder_began is None:
                self._ladder_began = time.monotonic()
            self._start_ladder_thread()

    def _start_ladder_thread(self) -> None:
        try:
            run_ladder_job(self._run_ladder, f"quiesce-ladder-{self.name}")
            self._ladder_handed = True
        except BaseException as exc:  # "can't start new thread" (nproc), MemoryError
            # Never promise a ladder nothing runs: the thread that waits for the scope
            # (__exit__, join, interpreter exit) runs it instead.
            log.warning("quiesce: cannot start the ladder thread of scope %r (%s: %s); "
                        "the thread waiting for the scope runs it", self.name,
                        type(exc).__name__, exc)
            self._leave_ladder_to_waiter()

    def _leave_ladder_to_waiter(self) -> None:
        with self._changed:
            self._ladder_inline = self._ladder_handed = True
            self._changed.notify_all()
        if self._async_waiters:
            self._wake_async()

    def _wait_for_ladder(self) -> None:
        """Wait until the ladder is done, running it here if no thread could.

        The stop that begins the ladder may run the scope token's callbacks in
        another thread (the token watcher, which observes the same stop after a
        fork made the token cross), so the ladder can be left to this thread
        *after* it looked: wait for "done or left to us", not for "done" alone.
        """
        while True:
            self._run_ladder_if_pending()
            with self._changed:
                in_slices(lambda t: self._changed.wait_for(
                    lambda: self._ladder_done.is_set() or self._ladder_inline, t), None)
                if self._ladder_done.is_set():
                    return

    def _run_ladder_if_pending(self) -> None:
        with self._lock:
            pending, self._ladder_inline = self._ladder_inline, False
        if not pending:
            return
        try:
            self._take_ladder()
        except BaseException:
            # Interrupted here (KeyboardInterrupt): the ladder is not done. Its rest runs
            # in a thread (or the next waiter), at the same deadlines; then the error goes on.
            self._start_ladder_thread()
            raise
        self._ladder_finished()

    def _run_ladder(self) -> None:
        """The ladder thread's target."""
        try:
            self._take_ladder()
        finally:
            self._ladder_finished()

    def _take_ladder(self) -> None:
        with self._lock:
            workers = list(self._workers)
        abandoned = run_ladder(workers, grace=self._grace, kill_after=self._kill_after,
                               changed=self._changed, hurry=self._hurry,
                               reason=self._token.reason, began=self._ladder_began)
        if abandoned:
            log.warning("quiesce: scope %r abandoned threads still running: %s",
                        self.name, ", ".join(w.name for w in abandoned))

    def _ladder_finished(self) -> None:
        self._ladder_done.set()
        with self._changed:
            self._forget_abandoned()
            self._changed.notify_all()
        self._wake_async()

    def _forget_abandoned(self) -> None:
        """An abandoned thread records no end: stop waiting for it (call under the lock)."""
        self._running = {w for w in self._running if w.ended_by != "abandoned"}

    def _stop_worker(self, worker: Worker, reason: str | None) -> None:
        worker.token.stop(reason or f"worker {worker.name!r} stopped")

        def ladder() -> None:
            try:
                run_ladder([worker], grace=self._grace, kill_after=self._kill_after,
                           changed=self._changed, hurry=self._hurry, reason=worker.token.reason)
            finally:
                with self._changed:
                    self._solo_ladders -= 1
                    self._forget_abandoned()
                    self._changed.notify_all()  # the scope's end may wait only on this one

        with self._lock:
            self._solo_ladders += 1  # its worker's end must wake it: notify every end
        try:
            run_ladder_job(ladder, f"quiesce-ladder-{worker.name}")
        except BaseException as exc:  # its token is stopped; the scope's ladder ends it
            with self._lock:
                self._solo_ladders -= 1
            log.warning("quiesce: cannot start a ladder thread for worker %r (%s: %s); it "
                        "is ended with its scope", worker.name, type(exc).__name__, exc)

    def _hurry_ladder(self) -> None:
        """Skip what remains of the current grace (a second signal)."""
        self._hurry.set()
        with self._changed:
            self._changed.notify_all()
        self._wake_hurried()
