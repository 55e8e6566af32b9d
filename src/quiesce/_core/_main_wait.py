"""Waits in the main thread that let signal handlers run promptly.

Python runs signal handlers in the main thread, between bytecodes. A main
thread blocked in a lock or a select is woken by a signal only if the
kernel delivered it to that very thread; when another thread took it, the
handler waits until the blocking call returns, possibly for the whole
grace. Even a signal aimed at the main thread can slip in just before it
blocks (after Python's last check for pending handlers, before the system
call), and then nothing interrupts the call. So the main thread waits in
slices of ``SLICE`` seconds; other threads wait in one go.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

SLICE = 0.05
# Off the main thread, the longest single wait: the OS calls behind Event.wait
# and poll() overflow past ~24 days (poll's int milliseconds) or
# threading.TIMEOUT_MAX, so a huge timeout (1e10) is waited in pieces.
LONGEST = 3600.0


def in_slices(wait: Callable[[float | None], bool], timeout: float | None) -> bool:
    """Call ``wait(t)`` (True once done) until done or ``timeout`` passed."""
    if threading.current_thread() is not threading.main_thread():
        if timeout is None or timeout <= LONGEST:
            return wait(timeout)
        end = time.monotonic() + timeout
        while not wait(min(LONGEST, max(0.0, end - time.monotonic()))):
            if time.monotonic() >= end:
                return False
        return True
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        remaining = SLICE if deadline is None else min(SLICE, deadline - time.monotonic())
        if wait(max(0.0, remaining)):
            return True
        if deadline is not None and time.monotonic() >= deadline:
            return False
