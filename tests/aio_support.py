"""What the asyncio tests share: running a coroutine on each kind of event loop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import pytest

T = TypeVar("T")
LOOPS = ["asyncio", "uvloop"]


def run_on(kind: str, coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on a fresh loop of ``kind`` (uvloop skipped cleanly if absent)."""
    if kind == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    else:
        factory = asyncio.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(coro)
