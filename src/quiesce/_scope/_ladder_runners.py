"""Threads that run ladders, kept a while after one ends: a stop need not start a thread.

A ladder that does not run in the thread leaving a block (``scope.stop()``,
a worker's failure, a signal, ``worker.stop()``, leaving ``async with``)
runs in a thread of its own, since a stop never blocks. Starting a thread
costs 0.1-0.3 ms, and the stopping thread spends it holding the GIL while
the workers it has just woken wait for it: a thread asleep in
``quiesce.sleep`` woke ~0.25 ms later after ``scope.stop()`` for that alone.
So a runner that has ended its ladder waits ``IDLE`` seconds for the next
one before it ends: a burst of stops reuses threads, a quiet program keeps
none.

Runners are daemon threads, and a ladder never depends on one: if none can
be started, ``run`` raises and the caller leaves the ladder to the thread
that waits for the scope (see _scope_ladder). A forked child starts with no
runner (threads do not survive fork) and forgets its parent's.

Rejected: one long-lived service thread running every ladder (a ladder
blocks between its steps, so ladders would have to become timer-driven
state machines); ``concurrent.futures.ThreadPoolExecutor`` (non-daemon
workers joined at exit, and an import of its own).
"""

from __future__ import annotations

import collections
import logging
import os
import threading
import time
from collections.abc import Callable

log = logging.getLogger("quiesce")

IDLE = 10.0
"""Seconds a runner waits for another ladder before it ends."""

_Job = tuple[Callable[[], None], str]  # the ladder, the runner's name while it runs


class _Runners:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._job_ready = threading.Condition(self._lock)
        self._jobs: collections.deque[_Job] = collections.deque()
        self._idle = 0  # runners waiting for a job

    def run(self, job: _Job) -> None:
        """Run ``job`` in a runner thread; raises if none is idle and none can be started."""
        with self._lock:
            if self._idle > len(self._jobs):  # an idle runner takes it
                self._jobs.append(job)
                self._job_ready.notify()
                return
        threading.Thread(target=self._serve, args=(job,), name=job[1], daemon=True).start()

    def _serve(self, job: _Job | None) -> None:
        me = threading.current_thread()
        while job is not None:
            ladder, me.name = job  # named after what it ends, for `quiesce doctor`
            job = None  # the ladder is not kept alive while the runner idles
            try:
                ladder()
            except Exception:  # a ladder ends its own state in a finally: this is a bug
                log.exception("quiesce: a ladder raised")
            del ladder
            me.name = "quiesce-ladder (idle)"
            job = self._next_job()

    def _next_job(self) -> _Job | None:
        with self._lock:
            self._idle += 1
            try:
                deadline = time.monotonic() + IDLE
                while not self._jobs:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return None
                    self._job_ready.wait(remaining)
                return self._jobs.popleft()
            finally:
                self._idle -= 1


_runners = _Runners()


def run_ladder_job(ladder: Callable[[], None], name: str) -> None:
    """Run ``ladder`` off this thread, in a thread named ``name`` meanwhile.

    Raises whatever starting a thread raised (RuntimeError, MemoryError) if
    no runner is idle and none can be started.
    """
    _runners.run((ladder, name))


def _forget_after_fork() -> None:
    global _runners
    _runners = _Runners()


os.register_at_fork(after_in_child=_forget_after_fork)
