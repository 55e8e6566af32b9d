"""Targets for tests/test_process_monitor.py (importable by spawn and forkserver children)."""

from __future__ import annotations

import os
import subprocess
import time

import quiesce


def square(x: int) -> int:
    return x * x


def big_result(size: int) -> bytes:
    return bytes(range(256)) * (size // 256)


def fail(message: str) -> None:
    raise ValueError(message)


def wait_for_stop(token: quiesce.StopToken) -> str:
    token.wait()
    return "stopped"


def leave_a_setsid_escaper(pidfile: str) -> None:
    """Start ``setsid sleep 60`` (it keeps the tag in its environment), record its PID,
    and exit at once, skipping the bootstrap's own cleanup of descendants."""
    child = subprocess.Popen(["setsid", "sleep", "60"])
    with open(pidfile + ".tmp", "w") as f:
        f.write(str(child.pid))
    os.rename(pidfile + ".tmp", pidfile)
    os._exit(0)


def wait_for_stop_after(ready: quiesce.StopToken, token: quiesce.StopToken) -> str:
    ready.stop()
    token.wait()
    return "stopped"


def _stopped_then_released(ready: quiesce.StopToken, seen: quiesce.StopToken, release: str,
                           token: quiesce.StopToken) -> None:
    """Once stopped, say so (``seen``), then run on until the file ``release`` exists."""
    ready.stop()
    token.wait()
    seen.stop()
    while not os.path.exists(release):
        time.sleep(0.005)


def exit_on_release(ready: quiesce.StopToken, seen: quiesce.StopToken, release: str,
                    token: quiesce.StopToken) -> str:
    """Once stopped, say so (``seen``), then exit once the file ``release`` exists."""
    _stopped_then_released(ready, seen, release, token)
    return "stopped"


def ignore_stop_until(ready: quiesce.StopToken, seen: quiesce.StopToken, release: str,
                      token: quiesce.StopToken) -> str:
    """Once stopped, say so (``seen``), then run on until the file ``release`` exists."""
    _stopped_then_released(ready, seen, release, token)
    return "released"


def escape_when_stopped(ready: quiesce.StopToken, pidfile: str, token: quiesce.StopToken) -> None:
    """Once stopped: start ``setsid sleep 60``, record its PID, and exit at once
    (skipping the bootstrap's cleanup), so only the owner's look can find it."""
    ready.stop()
    token.wait()
    leave_a_setsid_escaper(pidfile)
