"""Helpers for tests that watch real processes end."""

from __future__ import annotations

import time
from collections.abc import Iterable

import psutil


def alive(pid: int) -> bool:
    """Running; a zombie counts as ended (it only waits to be reaped)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def seconds_until_gone(pids: Iterable[int], limit: float = 5.0) -> tuple[float, list[int]]:
    """Poll every 5 ms until none of ``pids`` is alive or ``limit`` passes.

    Returns the time it took and the PIDs still alive at the end.
    """
    pids = list(pids)
    started = time.monotonic()
    while any(alive(p) for p in pids) and time.monotonic() - started < limit:
        time.sleep(0.005)
    return time.monotonic() - started, [p for p in pids if alive(p)]
