"""Targets for test_child_bootstrap (spawn and forkserver children import them)."""

from __future__ import annotations

import resource
import sys
import threading
import time
from typing import Any

import quiesce

from targets import mark_ready


def loaded_modules(*tokens: quiesce.StopToken) -> list[str]:
    """The modules this child process has imported (having received ``tokens``)."""
    loaded = sorted(sys.modules)
    import psutil  # noqa: F401  (the control: absent from the list, not from the machine)

    return loaded


def tokens_both_ways(mine: quiesce.StopToken, box: dict[str, quiesce.StopToken],
                     same: quiesce.StopToken) -> dict[str, Any]:
    """``mine`` is stopped by the owner; then this stops ``box["other"]`` for the owner."""
    woke = mine.wait(30)
    box["other"].stop("stopped in the child")
    return {"same": same is mine, "woke": woke, "reason": mine.reason}


def one() -> int:
    return 1


def nothing() -> None:
    pass


def takes_token(token: quiesce.StopToken) -> bool:
    return isinstance(token, quiesce.StopToken) and token is quiesce.current_token()


def takes_anything(*args: Any, **kwargs: Any) -> list[str]:
    return sorted(kwargs)


def token_named_but_given(token: str) -> str:
    return token


def _sleep_until_sigterm(ready: str) -> None:
    """Say ready, then sleep until the SIGTERM's ``Stopped`` lands here."""
    try:
        mark_ready(ready)
        while True:
            time.sleep(0.01)
    except quiesce.Stopped:
        pass


def sigterm_then_token(ready: str, *, token: quiesce.StopToken) -> dict[str, Any]:
    """Report the threads before and after a SIGTERM, and how the token was stopped."""
    before = sorted(t.name for t in threading.enumerate())
    _sleep_until_sigterm(ready)
    woke = token.wait(30)  # stopped by the helper thread, not by this one
    return {"before": before, "after": sorted(t.name for t in threading.enumerate()),
            "woke": woke, "reason": token.reason}


def bootstrapped_sleeper(ready: str, owner_pid: int) -> None:
    """Run the quiesce child bootstrap by itself (no scope, so no guardian), then sleep."""
    from quiesce._proc import _child, _proctree

    _child.prepare_child(quiesce.StopToken(), _proctree.new_tag(), owner_pid)
    mark_ready(ready)
    while True:
        time.sleep(0.01)


def sigterm_without_threads(ready: str, *, token: quiesce.StopToken) -> dict[str, Any]:
    """As ``sigterm_then_token``, in a process that can start no thread (RLIMIT_AS)."""
    with open("/proc/self/status") as f:
        size = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
    room = size + 1024 * 1024  # heap to spare, not a thread stack (8 MiB, or 2 MiB)
    resource.setrlimit(resource.RLIMIT_AS, (room, resource.RLIM_INFINITY))
    try:
        threading.Thread(target=lambda: None).start()
        started = True
    except RuntimeError:
        started = False
    _sleep_until_sigterm(ready)
    woke = token.wait(30)
    return {"thread_started": started, "woke": woke, "reason": token.reason}
