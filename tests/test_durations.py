"""Durations on the command line."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from quiesce._cli._durations import parse_duration


@pytest.mark.parametrize(("text", "seconds"), [
    ("10", 10.0), ("0.5", 0.5), (".25", 0.25), ("500ms", 0.5), ("10s", 10.0), ("2m", 120.0),
    ("1h", 3600.0), (" 3S ", 3.0), ("0", 0.0),
])
def test_accepted(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "-1", "abc", "10x", "1e3", "nan", "inf", "5 m s", "1.2.3"])
def test_rejected_with_examples(text: str) -> None:
    with pytest.raises(ValueError, match="500ms"):
        parse_duration(text)


@given(st.floats(min_value=0, max_value=1e6, allow_nan=False),
       st.sampled_from([("ms", 0.001), ("s", 1.0), ("m", 60.0), ("", 1.0)]))
def test_any_written_number_round_trips(value: float, unit: tuple[str, float]) -> None:
    text = f"{value:f}{unit[0]}"
    assert math.isclose(parse_duration(text), float(f"{value:f}") * unit[1], rel_tol=1e-12)
