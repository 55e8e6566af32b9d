"""Worker targets that fork without exec and escape: setsid, double fork, fork bombs.

Every escaper records ``PID-STARTTIME`` as a file in a marks directory (it
carries no tag a /proc scan could see: it never exec'd), so the test can
tell afterwards whether that very process still runs.
"""

from __future__ import annotations

import os
import signal
import time

import quiesce


def mark(marks: str) -> None:
    pid = os.getpid()
    with open(f"/proc/{pid}/stat", "rb") as f:
        start = f.read().rpartition(b")")[2].split()[19].decode()
    os.close(os.open(os.path.join(marks, f"{pid}-{start}"), os.O_CREAT | os.O_WRONLY, 0o644))


def escape(marks: str, depth: int, ignore_term: bool) -> None:
    """In a fresh fork: own session, double fork, then a subtree of ``depth`` more levels."""
    try:
        os.setsid()
        if os.fork() != 0:
            os._exit(0)  # the middle process: its child is now an orphan
        if ignore_term:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        mark(marks)
        for _ in range(2 if depth > 0 else 0):
            if os.fork() == 0:
                escape(marks, depth - 1, ignore_term)
        while True:
            time.sleep(1)
    finally:
        os._exit(0)


def expected(roots: int, depth: int) -> int:
    return roots * (2 ** (depth + 1) - 1)


def fork_escapers(marks: str, ready: str, roots: int, depth: int, ignore_term: bool,
                  obey: bool) -> None:
    """A worker: ``roots`` escaping fork trees, then wait for its stop (or ignore it)."""
    for _ in range(roots):
        if os.fork() == 0:
            escape(marks, depth, ignore_term)
    while len(os.listdir(marks)) < expected(roots, depth):
        time.sleep(0.01)
    os.close(os.open(ready, os.O_CREAT | os.O_WRONLY, 0o644))
    if obey:
        quiesce.current_token().wait()
        return
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    while True:
        time.sleep(0.1)


def survivors(marks: str) -> list[str]:
    """The marked processes still running (same PID and start time, not a zombie)."""
    left = []
    for name in os.listdir(marks):
        pid, start = name.split("-")
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                fields = f.read().rpartition(b")")[2].split()
        except OSError:
            continue
        if fields[19].decode() == start and fields[0] != b"Z":
            left.append(name)
    return left


def kill_survivors(marks: str) -> None:
    """After a failure: SIGKILL every marked process still running (pidfd, then re-check)."""
    for _ in range(20):
        left = survivors(marks)
        if not left:
            return
        for name in left:
            pid = int(name.split("-")[0])
            try:
                fd = os.pidfd_open(pid)
            except OSError:
                continue
            try:
                if name in survivors(marks):
                    signal.pidfd_send_signal(fd, signal.SIGKILL)
            finally:
                os.close(fd)
        time.sleep(0.05)
