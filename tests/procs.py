"""Helpers for tests that watch real processes: their endings, and handshakes (wait
for a state a step needs, never for a fixed time)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import psutil


def alive(pid: int) -> bool:
    """Running; a zombie counts as ended (it only waits to be reaped)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def seconds_until_gone(pids: Iterable[int], limit: float = 5.0) -> tuple[float, list[int]]:
    """Poll every 5 ms until none of ``pids`` is alive or ``limit`` passes.

    Returns the time it took and the PIDs still alive at the end.
    """
    pids = list(pids)
    started = time.monotonic()
    while any(alive(p) for p in pids) and time.monotonic() - started < limit:
        time.sleep(0.005)
    return time.monotonic() - started, [p for p in pids if alive(p)]


def wait_for(condition: Callable[[], object], what: str, timeout: float = 20.0) -> None:
    """Poll ``condition`` every 5 ms until it is true; fail naming ``what`` after ``timeout``.

    The handshake for tests: wait for the state a step needs, never a fixed
    time. The timeout is generous (a loaded CI machine) and only bounds a
    failure.
    """
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.005)


def wait_for_file(path: str | os.PathLike[str], timeout: float = 20.0) -> str:
    """Wait until ``path`` exists and is not empty; return its text."""
    found = Path(path)

    def written() -> bool:
        try:
            return bool(found.read_text())
        except OSError:
            return False

    wait_for(written, f"{found} to be written", timeout)
    return found.read_text()


def stat_fields(pid: int) -> list[str]:
    """/proc/PID/stat after the command name: [0] is the state letter, [1] the PPID,
    [2] the process group, [5] the terminal's foreground group (tpgid)."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        return f.read().rpartition(b")")[2].decode().split()


def state(pid: int) -> str:
    """The state letter of ``pid`` (R, S, D, T, Z, ...), or '' if there is no such process."""
    try:
        return stat_fields(pid)[0]
    except OSError:
        return ""


def cmdline(pid: int) -> list[str]:
    """The argv ``pid`` runs now (it changes at exec), or [] if there is no such process."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().decode(errors="replace").split("\0")[:-1]
    except OSError:
        return []


def catches(pid: int, signum: int) -> bool:
    """Whether ``pid`` has a handler installed for ``signum`` (SigCgt in /proc/PID/status)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("SigCgt:"):
                    return bool(int(line.split()[1], 16) >> (signum - 1) & 1)
    except OSError:
        pass
    return False


def descendants_running(root: int, argv: Iterable[str]) -> list[int]:
    """The descendants of ``root`` that exec'd ``argv`` and are not zombies."""
    wanted = list(argv)
    try:
        found = psutil.Process(root).children(recursive=True)
    except psutil.Error:
        return []
    return [p.pid for p in found if cmdline(p.pid) == wanted and state(p.pid) not in ("Z", "")]
