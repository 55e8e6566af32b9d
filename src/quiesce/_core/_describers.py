"""What ``quiesce doctor`` can ask live objects about themselves (pools' running tasks).

A pool registers a describer once; the doctor's agent calls them all when
the program hangs. Describers must be cheap and never raise (errors are
reported as text instead).
"""

from __future__ import annotations

import threading
from collections.abc import Callable

_describers: list[Callable[[], list[str]]] = []
_lock = threading.Lock()


def register_describer(describe: Callable[[], list[str]]) -> None:
    """Add ``describe()``: lines saying what is running (empty list: nothing)."""
    with _lock:
        if describe not in _describers:
            _describers.append(describe)


def describe_all() -> list[str]:
    with _lock:
        describers = list(_describers)
    lines: list[str] = []
    for describe in describers:
        try:
            lines.extend(describe())
        except Exception as exc:  # a report must not fail because one describer did
            lines.append(f"(describer {describe!r} failed: {type(exc).__name__}: {exc})")
    return lines
