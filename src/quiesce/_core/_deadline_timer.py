"""One thread per process that runs every deadline: token expiry, deadline blocks.

Chosen: a heap of ``(deadline, seq, entry)`` served by one daemon thread,
started on first use. ``call_at`` is O(log n) and wakes the thread only when
the new deadline is the earliest. An entry is cancelled without the lock
(``entry.action = None``, atomic under the GIL), so a weakref callback or a
block's exit never waits on the timer and can never deadlock with it (a
garbage collection may run a weakref callback while this very thread holds
the lock); cancelled entries are dropped when they reach the top, or all at
once when they outnumber the live ones, so 10,000 blocks left early do not
pile up until their far deadlines.

After fork the child gets a fresh thread (threads do not survive fork) and
keeps only the entries marked ``fork_safe``: the expiry of an inherited
token, which the parent's timer also does at the same instant, so stopping
it here changes nothing but makes the child keep the deadline on its own.
Other callbacks (a worker's ladder) belong to the parent and are dropped:
run in the child they would signal the parent's processes.

Waits are cut to ``MAX_WAIT`` seconds: ``Condition.wait`` refuses a timeout
beyond ``threading.TIMEOUT_MAX``, and a huge deadline must never crash.

Rejected: ``threading.Timer`` per deadline (a thread per block: ~100 us to
start and a thread leaked by each block left early, which is what stopit
does); the pools' ``Timer`` (one per pool, and it lives in the ``_pools``
layer above this one); checking the clock in ``token.stopped`` (doubles the
cost of the hot-loop check, and a ``select`` on ``fileno()`` would never wake).
"""

from __future__ import annotations

import heapq
import itertools
import os
import threading
import time
from collections.abc import Callable

from quiesce._core._log import log  # logging imported on first use

MAX_WAIT = 3600.0
_COMPACT_MIN = 64


class Entry:
    """One scheduled call; ``cancel()`` is cheap, lock-free and idempotent."""

    __slots__ = ("action", "deadline", "fork_safe")

    def __init__(self, deadline: float, action: Callable[[], object], fork_safe: bool) -> None:
        self.deadline = deadline
        self.action: Callable[[], object] | None = action
        self.fork_safe = fork_safe

    def cancel(self, _ref: object = None) -> None:
        """Drop the call if it has not run (usable as a weakref callback)."""
        if self.action is not None:
            self.action = None
            timer = _instance
            if timer is not None:
                timer.cancelled += 1  # a hint for compaction; a lost update is harmless


class DeadlineTimer:
    def __init__(self, entries: list[Entry] | None = None) -> None:
        self._seq = itertools.count()
        self._heap: list[tuple[float, int, Entry]] = [
            (e.deadline, next(self._seq), e) for e in entries or ()
        ]
        heapq.heapify(self._heap)
        self._cond = threading.Condition(threading.Lock())
        self._thread: threading.Thread | None = None
        self.cancelled = 0
        if self._heap:
            self._start()

    def call_at(self, deadline: float, action: Callable[[], object], *,
                fork_safe: bool = False) -> Entry:
        """Run ``action()`` on the timer thread once ``time.monotonic() >= deadline``."""
        entry = Entry(deadline, action, fork_safe)
        with self._cond:
            if self.cancelled > _COMPACT_MIN and self.cancelled * 2 > len(self._heap):
                self._compact()
            heapq.heappush(self._heap, (deadline, next(self._seq), entry))
            if self._thread is None:
                self._start()
            elif self._heap[0][2] is entry:
                self._cond.notify()
        return entry

    def pending(self) -> int:
        """How many live entries wait (for tests: nothing leaks)."""
        with self._cond:
            return sum(1 for _, _, e in self._heap if e.action is not None)

    def entries(self) -> list[Entry]:
        with self._cond:
            return [e for _, _, e in self._heap if e.action is not None]

    def _compact(self) -> None:
        self._heap = [item for item in self._heap if item[2].action is not None]
        heapq.heapify(self._heap)
        self.cancelled = 0

    def _start(self) -> None:
        thread = threading.Thread(target=self._run, name="quiesce-deadlines", daemon=True)
        thread.start()
        self._thread = thread

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    if not self._heap:
                        self._cond.wait(MAX_WAIT)
                        continue
                    deadline, _, entry = self._heap[0]
                    if entry.action is None:
                        heapq.heappop(self._heap)
                        self.cancelled = max(0, self.cancelled - 1)
                        continue
                    now = time.monotonic()
                    if deadline <= now:
                        heapq.heappop(self._heap)
                        action, entry.action = entry.action, None
                        break
                    self._cond.wait(min(deadline - now, MAX_WAIT))
            try:
                action()
            except Exception:
                log.exception("quiesce: a deadline callback failed")
            del action, entry


_instance: DeadlineTimer | None = None
_instance_lock = threading.Lock()


def timer() -> DeadlineTimer:
    """The process's one deadline timer (its thread starts on the first deadline)."""
    global _instance
    if _instance is None:
        with _instance_lock:
            if _instance is None:
                _instance = DeadlineTimer()
    return _instance


def call_at(deadline: float, action: Callable[[], object], *, fork_safe: bool = False) -> Entry:
    """Run ``action()`` at ``deadline`` (``time.monotonic()`` seconds) on the timer thread."""
    return timer().call_at(deadline, action, fork_safe=fork_safe)


def _after_fork_in_child() -> None:
    global _instance, _instance_lock
    _instance_lock = threading.Lock()
    if _instance is None:
        return
    old = _instance
    # The parent's lock may have been held at the fork: read the heap without it.
    kept = [e for _, _, e in old._heap if e.action is not None and e.fork_safe]
    _instance = DeadlineTimer(kept) if kept else None


os.register_at_fork(after_in_child=_after_fork_in_child)
