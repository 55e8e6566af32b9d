"""Durations on the command line: ``10``, ``0.5``, ``500ms``, ``10s``, ``2m``, ``1h``."""

from __future__ import annotations

import math
import re

_UNITS = {"": 1.0, "s": 1.0, "ms": 0.001, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PATTERN = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h|d)?", re.ASCII)
EXAMPLES = "e.g. 10, 0.5, 500ms, 10s, 2m"


def parse_duration(text: str) -> float:
    """Seconds as a finite float >= 0, or ValueError saying what is wrong and how to write it."""
    match = _PATTERN.fullmatch(text.strip().lower())
    if match is None:
        raise ValueError(f"invalid duration {text!r} ({EXAMPLES})")
    seconds = float(match.group(1)) * _UNITS[match.group(2) or ""]
    if not math.isfinite(seconds):
        raise ValueError(f"duration {text!r} is too large")
    return seconds
