"""The stop ladder: token, then SIGTERM after grace, then SIGKILL after kill_after.

Every step is taken on all still-running workers at once, so a whole
shutdown takes about ``grace + kill_after`` however many workers there are,
not that much per worker. Between steps the ladder waits on one condition
that every worker's end notifies, so it moves on the moment all are done.
``hurry`` (a second signal, see handle_signals) cuts the current wait short.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

from quiesce._core._main_wait import SLICE
from quiesce._scope._worker import Worker

# After SIGKILL, how long to wait for process monitors to reap and clear
# what remains of each tree before giving up on a worker.
REAP_TIMEOUT = 5.0
# The longest single wait: Condition.wait raises OverflowError beyond
# threading.TIMEOUT_MAX (~292 years), so a grace of 1e10 s is waited in pieces:
# "for ever" in practice, and never a crash of the ladder thread.
MAX_WAIT = 3600.0


def run_ladder(workers: Sequence[Worker], *, grace: float, kill_after: float,
               changed: threading.Condition, hurry: threading.Event,
               reason: str | None = None, began: float | None = None) -> list[Worker]:
    """Take every worker through the ladder; return once each has ended or been abandoned.

    Returns the workers abandoned (threads still running after the ladder).

    ``began`` (``time.monotonic()``) is when the ladder began: a ladder run
    again after an interruption (KeyboardInterrupt in the thread leaving a
    block) keeps the grace's deadline instead of granting a new grace (after
    the SIGTERM it grants kill_after again: a bounded extra). A step taken
    twice is harmless: each is a no-op on a worker that has ended.
    """
    began = time.monotonic() if began is None else began
    for worker in workers:
        if worker._ladder_step < 1:
            worker._ladder_step = 1
        if not worker._token.stopped:  # usually stopped already, with its scope's token
            worker._token.stop(reason)
        worker._on_stop_requested()
    # Each step looks only at the workers the one before left alive, and the
    # ladder ends as soon as none is (usually during the grace): its end is on
    # the path of every scope exit.
    if _wait(workers, began + grace, changed, hurry):
        return []
    alive = _alive(workers)
    for worker in alive:
        worker._terminate()
    if _wait(alive, max(time.monotonic(), began + grace) + kill_after, changed, hurry):
        return []
    alive = _alive(alive)
    for worker in alive:
        worker._kill()
    deadline = time.monotonic() + REAP_TIMEOUT
    for worker in alive:
        if worker.kind != "thread" and worker.alive:
            worker._wait_ended(max(0.0, deadline - time.monotonic()))
    abandoned = _alive(alive)
    for worker in abandoned:
        worker._abandon()
    return abandoned


def _alive(workers: Sequence[Worker]) -> list[Worker]:
    return [w for w in workers if w.alive]


def _wait(workers: Sequence[Worker], deadline: float, changed: threading.Condition,
          hurry: threading.Event) -> bool:
    """Wait until every worker has ended (True), the deadline passes or a hurry (False)."""
    # A worker never comes back to life: each wake-up looks on from the first
    # one still alive, so N ends cost O(N) checks in all, not O(N) each.
    # In the main thread (a block's own ladder) in slices, so signal handlers run.
    longest = SLICE if threading.current_thread() is threading.main_thread() else MAX_WAIT
    first = 0
    with changed:
        while not hurry.is_set():
            while first < len(workers) and not workers[first].alive:
                first += 1
            if first == len(workers):
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            changed.wait(min(remaining, longest))
    return False
