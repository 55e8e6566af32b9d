"""Helpers shared by the fault-injection tests (tests/faults)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

PROGRAMS = Path(__file__).parent / "programs"
TESTS = Path(__file__).parents[1]
if str(TESTS) not in sys.path:  # procs.py, targets.py live one level up
    sys.path.insert(0, str(TESTS))


def open_fds() -> set[int]:
    """The fds open in this process now."""
    return {int(fd) for fd in os.listdir("/proc/self/fd")}


def unshare_reason() -> str | None:
    """Why a private PID namespace cannot be made here (None if it can)."""
    if shutil.which("unshare") is None:
        return "unshare(1) is not installed"
    try:
        probe = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", "true"],
                               capture_output=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unshare failed: {exc}"
    if probe.returncode != 0:
        return ("unshare --pid --fork --mount-proc is not permitted here: "
                + probe.stderr.decode(errors="replace").strip())
    return None


def program(name: str) -> str:
    return str(PROGRAMS / name)


def tagged(tag: str) -> list[tuple[int, str]]:
    """Live (not zombie) processes whose environment holds QUIESCE_TEST_TAG=``tag``."""
    needle = f"QUIESCE_TEST_TAG={tag}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                if needle not in f.read():
                    continue
            with open(f"/proc/{entry}/stat", "rb") as f:
                if f.read().rpartition(b")")[2].split()[0] == b"Z":
                    continue
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except (OSError, IndexError):
            continue
        found.append((int(entry), cmd))
    return found
