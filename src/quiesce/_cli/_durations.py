"""Durations on the command line, in GNU ``timeout``'s syntax plus ``ms``.

A number (``10``, ``0.5``, ``.25``, ``1e-3``, ``2.34e+5``, ``0x1p-3``,
``inf``) with an optional unit: ``s`` (default), ``m``, ``h``, ``d`` as GNU
``timeout`` spells them (lower case only: ``42D`` is an error there and
here), or ``ms``. The result is in seconds and may be ``_INF``: a value
too large for a float, or multiplied past one by its unit, means "for ever"
instead of an ``OverflowError`` later. A positive value too small for a
float (``1e-10000``) is not zero: it rounds up to the smallest positive
delay, as GNU does, so ``--timeout 1e-10000`` times out at once.

Rejected: a regular expression (importing :mod:`re` costs more than the rest
of ``quiesce run``'s start-up); accepting ``nan`` or signs other than ``+``
(GNU refuses them: no duration is "not a number" or negative).
"""

from __future__ import annotations

EXAMPLES = "e.g. 10, 0.5, 1e-3, 500ms, 10s, 2m, 1h, 1d"
_UNITS = (("ms", 0.001), ("s", 1.0), ("m", 60.0), ("h", 3600.0), ("d", 86400.0))
_INF = float("inf")
_SMALLEST = 5e-324  # the smallest positive float: "as soon as possible"


def parse_duration(text: str, option: str = "duration") -> float:
    """Seconds (``_INF`` for ever) from ``text``, or ValueError naming ``option``.

    >>> parse_duration("1.5m")
    90.0
    """
    number, unit = text.strip(), 1.0
    for suffix, factor in _UNITS:
        if number.endswith(suffix):
            number, unit = number[: -len(suffix)], factor
            break
    value = _number(number)
    if value is None or not value >= 0:
        raise ValueError(f"{option}: invalid duration {text!r} ({EXAMPLES})")
    if value == 0 and any(c in "123456789" for c in _mantissa(number)):
        return _SMALLEST  # underflow: positive but below a float's reach
    seconds = value * unit
    return _INF if seconds > 1e300 else seconds


def _number(text: str) -> float | None:
    low = text.lower()
    if not low or low[0] == "-" or "_" in low or "nan" in low or low != low.strip():
        return None
    try:
        if low.lstrip("+").startswith("0x"):
            return float.fromhex(low)
        return float(low)
    except (ValueError, OverflowError):
        return _INF if low.lstrip("+") in ("inf", "infinity") else None


def _mantissa(text: str) -> str:
    low = text.lower()
    if low.lstrip("+").startswith("0x"):
        return low.lstrip("+")[2:].split("p")[0]
    return low.split("e")[0]
