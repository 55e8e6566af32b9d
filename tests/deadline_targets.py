"""Module-level targets for the deadline tests (spawn and forkserver children import them)."""

from __future__ import annotations

import time

import quiesce
from quiesce._core import _deadline_timer


def report_deadline() -> tuple[float | None, int, bool, str | None, float]:
    """The inherited deadline, whether this process armed it, and when the stop came."""
    token = quiesce.current_token()
    deadline, armed = token.deadline, _deadline_timer.timer().pending()
    stopped = token.wait(30)
    return deadline, armed, stopped, token.reason, time.monotonic()


def ignore_stops_forever() -> None:
    """Never looks at its token: only the ladder's SIGTERM ends it."""
    while True:
        time.sleep(0.01)


def sleep_on_token(seconds: float) -> str:
    quiesce.sleep(seconds)
    return "slept"


def task_deadline() -> float | None:
    return quiesce.current_token().deadline
