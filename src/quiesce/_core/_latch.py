"""A one-way gate for threads: closed until opened, then open for ever.

What the token cores and a worker's end need from ``threading.Event``,
with less work on the side that opens it. ``Event.set()`` takes its
Condition's lock, releases each waiter's private lock and lets the
Condition go again (Python frames and three lock operations per waiter),
and each woken waiter must retake the Condition before it returns. When a
scope stopped 100 thread workers, that was about 15 us a token in the
stopping thread, against about 7 us a waiter for the one ``Event.set()``
that wakes them all; with the latch, about 12.5 us, of which about 8 us is
the futex wake-up both pay (a profile of the scope's stop loop,
2026-11-30; the row is ``bench_limits.py --only threads``).

A latch keeps the private lock per waiter and drops the Condition: a
waiter appends its own held lock to a list and sleeps on it; ``open``
sets the flag, then releases every lock listed. A waiter looks at the flag
again after appending, so an ``open`` that read the list before the append
is never missed. Each waiter sleeps on a lock only it and ``open`` touch:
an exception thrown into a waiter (a signal handler's, or quiesce's own
thread interrupt) can leave only that waiter's lock behind.

Rejected: one lock held while closed, which each waiter takes and passes
on ("baton"): cheaper still, but an exception landing in a waiter between
its take and its give-back would keep the gate shut for every other waiter.
"""

from __future__ import annotations

import _thread

_TIMEOUT_MAX = _thread.TIMEOUT_MAX


class Latch:
    """Closed until ``open()``; ``wait()`` returns True once open (False at its timeout).

    Example::

        latch = Latch()
        threading.Thread(target=latch.open).start()
        assert latch.wait(5.0)
    """

    __slots__ = ("_waiters", "is_open")

    def __init__(self) -> None:
        self.is_open = False
        self._waiters: list[_thread.LockType] = []

    def open(self) -> None:
        """Open the gate and wake every waiter; idempotent, from any thread."""
        if self.is_open:
            return
        self.is_open = True
        waiters, self._waiters = self._waiters, []
        for lock in tuple(waiters):  # a copy in one call: a waiter timing out may remove its own
            try:
                lock.release()
            except RuntimeError:  # released by another open() racing this one
                pass

    def wait(self, timeout: float | None) -> bool:
        """Sleep until open or ``timeout`` seconds (None: no limit) pass; True if open."""
        if self.is_open:
            return True
        lock = _thread.allocate_lock()
        lock.acquire()
        waiters = self._waiters
        waiters.append(lock)
        if self.is_open:  # opened before it could see our lock
            return True
        limit = -1.0 if timeout is None else min(max(timeout, 0.0), _TIMEOUT_MAX)
        if lock.acquire(True, limit):
            return True
        try:
            waiters.remove(lock)  # timed out: open() need not release it
        except ValueError:  # open() took the list meanwhile
            pass
        return self.is_open
