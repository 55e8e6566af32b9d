"""Argument checks shared by every public entry point: errors name the argument."""

from __future__ import annotations

import math
import signal
from collections.abc import Callable
from typing import Any

# A duration or limit longer than this (~31 years) means "for ever": no wait
# primitive takes more than ~292 years (threading.TIMEOUT_MAX) and poll() ~24
# days, so a bigger number would only crash a wait deep inside a background
# thread (limit_seconds and deadline_time make it "no limit" too).
FOREVER = 1e9


def seconds(name: str, value: object, *, allow_none: bool = False) -> float | None:
    """Return ``value`` as a finite, non-negative float, or raise naming ``name``.

    Beyond ``FOREVER``: None ("no limit") where None is allowed, else FOREVER.
    """
    if value is None:
        if allow_none:
            return None
        raise TypeError(f"{name} must be a number of seconds, not None")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number of seconds, not {type(value).__name__}")
    result = float(value)
    if math.isnan(result) or math.isinf(result):
        raise ValueError(f"{name} must be a finite number of seconds, got {value!r}")
    if result < 0:
        raise ValueError(f"{name} must be >= 0 seconds, got {value!r}")
    if result > FOREVER:
        return None if allow_none else FOREVER
    return result


def required_seconds(name: str, value: object) -> float:
    result = seconds(name, value)
    assert result is not None
    return result


def limit_seconds(name: str, value: object) -> float | None:
    """A relative time limit: seconds >= 0; ``inf`` or a huge value means none (None)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number of seconds, not {type(value).__name__}")
    result = float(value)
    if math.isnan(result):
        raise ValueError(f"{name} must be a number of seconds >= 0, got NaN")
    if result < 0:
        raise ValueError(f"{name} must be >= 0 seconds, got {value!r}")
    return None if result > FOREVER else result


def deadline_time(name: str, value: object, now: float) -> float | None:
    """An absolute ``time.monotonic()`` deadline; past is fine, ``inf``/far away is None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a time.monotonic() value, not {type(value).__name__}")
    result = float(value)
    if math.isnan(result):
        raise ValueError(f"{name} must be a time.monotonic() value, got NaN")
    return None if result - now > FOREVER else result


def callable_target(name: str, value: object) -> Callable[..., Any]:
    if not callable(value):
        raise TypeError(f"{name} must be callable, got {type(value).__name__} {value!r}")
    return value


def signal_number(name: str, value: object) -> signal.Signals:
    """Accept a Signals member, an int, or a name like 'TERM' / 'SIGTERM'."""
    if isinstance(value, signal.Signals):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            return signal.Signals(value)
        except ValueError:
            raise ValueError(f"{name}: {value} is not a signal number on this platform") from None
    if isinstance(value, str):
        key = value.strip().upper()
        if key.isdigit():
            return signal_number(name, int(key))
        if not key.startswith("SIG"):
            key = "SIG" + key
        try:
            return signal.Signals[key]
        except KeyError:
            raise ValueError(f"{name}: unknown signal name {value!r}") from None
    raise TypeError(f"{name} must be a signal (name or number), not {type(value).__name__}")
