"""One daemon thread per owner that runs callbacks at deadlines (task timeouts, graces).

A heap and a condition: ``call_at`` is O(log n) and wakes the thread only
when the new deadline is the earliest. Callbacks run on the timer thread
and must be quick (they stop tokens and resolve futures).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger("quiesce")


class Timer:
    def __init__(self, name: str) -> None:
        self._name = name
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._cond = threading.Condition(threading.Lock())
        self._thread: threading.Thread | None = None
        self._closed = False

    def call_at(self, deadline: float, callback: Callable[[], None]) -> None:
        """Run ``callback()`` once ``time.monotonic()`` reaches ``deadline``."""
        with self._cond:
            if self._closed:
                return
            heapq.heappush(self._heap, (deadline, next(self._seq), callback))
            if self._thread is None:
                thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                thread.start()  # may raise (thread limit): then the next call_at tries again
                self._thread = thread
            elif self._heap[0][2] is callback:
                self._cond.notify()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._heap.clear()
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closed:
                    now = time.monotonic()
                    if self._heap and self._heap[0][0] <= now:
                        callback = heapq.heappop(self._heap)[2]
                        break
                    # Bounded: Condition.wait overflows past threading.TIMEOUT_MAX.
                    self._cond.wait(min(self._heap[0][0] - now, 3600.0) if self._heap else None)
                else:
                    return
            try:
                callback()
            except Exception:
                log.exception("quiesce: a timer callback failed")
