"""Durations on the command line: GNU ``timeout``'s syntax, plus ``ms``."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from quiesce._cli._durations import parse_duration


@pytest.mark.parametrize(("text", "seconds"), [
    ("10", 10.0), ("0.5", 0.5), (".25", 0.25), ("500ms", 0.5), ("10s", 10.0), ("2m", 120.0),
    ("1h", 3600.0), (" 3s ", 3.0), ("0", 0.0), ("1d", 86400.0), ("1e-3", 0.001),
    ("2.34e+5", 234000.0), ("2.34e+5d", 2.34e5 * 86400), ("+3", 3.0), ("0x1p-3", 0.125),
    ("9.999999999", 9.999999999), ("10.34", 10.34),
])
def test_accepted(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["inf", "infinity", "1e400", "1e300d",
                                  "1.7976931348623157e+308d"])
def test_huge_means_for_ever(text: str) -> None:
    """GNU: an overflowing timeout is no timeout, never an error or a wrapped-around one."""
    assert parse_duration(text) == math.inf


def test_underflow_rounds_up_to_the_smallest_delay() -> None:
    """coreutils tests/timeout/timeout-large-parameters.sh: `timeout 1e-5000` times out."""
    assert 0 < parse_duration("1e-10000") < 1e-300
    assert parse_duration("0e-10000") == 0  # zero written small is still zero


@pytest.mark.parametrize("text", ["", "-1", "abc", "10x", "nan", "5 m s", "1.2.3", "42D", "3S",
                                  "1_0", "-0.5", "s", "1e", "--1"])
def test_rejected_naming_the_option_with_examples(text: str) -> None:
    with pytest.raises(ValueError, match=r"^--timeout: invalid duration .*500ms"):
        parse_duration(text, "--timeout")


@given(st.floats(min_value=0, max_value=1e6, allow_nan=False),
       st.sampled_from([("ms", 0.001), ("s", 1.0), ("m", 60.0), ("", 1.0)]))
def test_any_written_number_round_trips(value: float, unit: tuple[str, float]) -> None:
    text = f"{value:f}{unit[0]}"
    assert math.isclose(parse_duration(text), float(f"{value:f}") * unit[1], rel_tol=1e-12)


@given(st.floats(min_value=0, allow_nan=False, allow_infinity=False),
       st.sampled_from(["", "s", "m", "h", "d"]))
def test_never_an_overflow(value: float, unit: str) -> None:
    assert parse_duration(f"{value!r}{unit}") >= 0
