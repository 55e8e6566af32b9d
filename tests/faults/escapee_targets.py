"""Worker targets for the signal fault tests (importable by spawn/forkserver children)."""

from __future__ import annotations

import time

import quiesce


def ignores_its_token(ready: str) -> None:
    open(ready, "w").close()
    while True:
        time.sleep(0.05)


def slow_cleanup(ready: str) -> str:
    open(ready, "w").close()
    try:
        quiesce.current_token().wait()
    finally:
        deadline = time.monotonic() + 0.3
        while time.monotonic() < deadline:
            try:
                time.sleep(0.01)
            except quiesce.Stopped:
                pass
    return "cleaned up"
