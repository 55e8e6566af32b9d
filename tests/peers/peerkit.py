"""Helpers for the ports of tini's, dumb-init's and coreutils timeout's test suites.

Each helper stands in for one of the peers' own (dumb-init ``testing/``,
tini's busy_wait, coreutils' ``returns_``), written anew for quiesce.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

PROGRAMS = Path(__file__).parent / "programs"
QUIESCE = [sys.executable, "-m", "quiesce", "run"]
PRINT_SIGNALS = [sys.executable, str(PROGRAMS / "print_signals.py")]
# dumb-init's NORMAL_SIGNALS: 1..31 but the uncatchable, SIGCHLD and the job-control three.
JOB_CONTROL = frozenset({signal.SIGTSTP, signal.SIGTTOU, signal.SIGTTIN})
NORMAL_SIGNALS = sorted(set(range(1, 32)) - {signal.SIGKILL, signal.SIGSTOP, signal.SIGCHLD}
                        - JOB_CONTROL)
MARGIN = 8.0  # seconds of slack for a loaded CI machine


def run(*args: str, timeout: float = 60, **kw: object) -> subprocess.CompletedProcess[str]:
    """``quiesce run ARGS...`` to its end, output captured."""
    return subprocess.run([*QUIESCE, *args], capture_output=True, text=True,  # type: ignore[call-overload, no-any-return]
                          timeout=timeout, **kw)


def wait_until(condition: Callable[[], object], timeout: float = 10.0,
               message: str = "condition never met") -> None:
    """tini's busy_wait / dumb-init's sleep_until: poll every 10 ms."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(message)
        time.sleep(0.01)


def process_state(pid: int) -> str:
    """'running', 'sleeping', 'stopped', ... from /proc/PID/status."""
    text = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"^State:\s+\S+ \((\S+)\)$", text, re.MULTILINE)
    assert match, text
    return match.group(1)


def alive(pid: int) -> bool:
    try:
        return process_state(pid) not in ("zombie", "dead")
    except OSError:
        return False


def children(pid: int) -> set[int]:
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_bytes()
            except OSError:
                continue
            if int(stat.rpartition(b")")[2].split()[1]) == pid:
                found.add(int(entry))
    return found


def descendants(pid: int) -> set[int]:
    found = set()
    for child in children(pid):
        found |= {child} | descendants(child)
    return found


def kill_quietly(pid: int, sig: int = signal.SIGKILL) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def finish(proc: subprocess.Popen[bytes], *pids: int) -> None:
    """SIGKILL ``pids`` (known to be ours) and make sure ``proc`` is gone."""
    for pid in pids:
        kill_quietly(pid)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        for pid in descendants(proc.pid):
            kill_quietly(pid)
        proc.kill()
        proc.wait()
    for stream in (proc.stdout, proc.stderr, proc.stdin):
        if stream is not None:
            stream.close()


@contextmanager
def print_signals(args: Sequence[str] = ()) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """dumb-init's ``print_signals``: yield (quiesce run, the printer's PID)."""
    proc = subprocess.Popen([*QUIESCE, *args, "--", *PRINT_SIGNALS], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    match = re.match(rb"^ready \(pid: (\d+)\)\n$", line)
    assert match, line
    printer = int(match.group(1))
    try:
        yield proc, printer
    finally:
        finish(proc, printer)


def next_signal(proc: subprocess.Popen[bytes]) -> int:
    assert proc.stdout is not None
    return int(proc.stdout.readline())
