"""Shared fixtures: every test is checked for leaked processes, threads and fds.

Each test runs with a fresh ``QUIESCE_TEST_TAG`` in its environment, so every
process it execs carries the tag in /proc/PID/environ even after it escapes
the tree (``setsid``, double fork). After the test, any live descendant of
the test process or any tagged process is a leak: the fixture kills it (by
PID, only processes it can prove are ours) and fails the test.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable, Collection, Iterator

import psutil
import pytest

pytest_plugins = ["pytester"]

TEST_TAG_ENV = "QUIESCE_TEST_TAG"

# Long-lived helpers of the test process itself, not started by any one test.
_ALLOWED_CMDLINE_MARKERS = (
    "multiprocessing.forkserver",
    "multiprocessing.resource_tracker",
    "quiesce/_proc/_guardian.py",
)


def _allowed(proc: psutil.Process, parents: Collection[int]) -> bool:
    """A long-lived helper of the test process (or of a spared process) itself.

    Only a direct child of ``parents`` counts: a forkserver's children carry its
    command line (fork without exec), and a helper of a program the test ran
    must end with that program.
    """
    try:
        cmd = " ".join(proc.cmdline())
        if proc.ppid() not in parents:
            return False
    except psutil.Error:
        return True  # gone or a zombie already reaped
    return any(marker in cmd for marker in _ALLOWED_CMDLINE_MARKERS)


def _tagged(tag: str) -> list[psutil.Process]:
    found = []
    needle = f"{TEST_TAG_ENV}={tag}".encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                if needle in f.read():
                    found.append(psutil.Process(int(entry)))
        except (OSError, psutil.Error):
            continue
    return found


def leftover_processes(tag: str, spared: Collection[int] = ()) -> list[psutil.Process]:
    """Live descendants of the test process and processes carrying ``tag``, but the
    test process's own helpers (forkserver, resource tracker, guardian) and those of
    ``spared`` processes."""
    me = psutil.Process()
    parents = {me.pid, *spared}
    procs: dict[int, psutil.Process] = {}
    try:
        for p in me.children(recursive=True):
            procs[p.pid] = p
    except psutil.Error:
        pass
    if os.path.isdir("/proc"):
        for p in _tagged(tag):
            if p.pid != me.pid:
                procs[p.pid] = p
    alive = []
    for p in procs.values():
        try:
            if p.status() == psutil.STATUS_ZOMBIE or _allowed(p, parents):
                continue
        except psutil.Error:
            continue
        alive.append(p)
    return alive


@contextlib.contextmanager
def checked_for_leaks(allowed: Callable[[], Collection[int]] = frozenset,
                      patience: float = 3.0) -> Iterator[str]:
    """Run the body under a fresh test tag; then fail if a process it started lives on.

    Waits up to ``patience`` seconds for stragglers; ``allowed()`` names PIDs
    that may remain (a module's long-lived cluster). Leftovers are killed by
    PID (psutil checks create time: never a recycled PID).
    """
    tag = uuid.uuid4().hex
    old = os.environ.get(TEST_TAG_ENV)
    os.environ[TEST_TAG_ENV] = tag
    try:
        yield tag
    finally:
        if old is None:
            os.environ.pop(TEST_TAG_ENV, None)
        else:
            os.environ[TEST_TAG_ENV] = old
    deadline = time.monotonic() + patience
    while True:
        spared = allowed()
        left = [p for p in leftover_processes(tag, spared) if p.pid not in spared]
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    described = []
    for p in left:
        try:
            described.append(f"{p.pid}: {' '.join(p.cmdline())!r}")
            p.send_signal(signal.SIGKILL)
        except psutil.Error:
            continue
    if described:
        pytest.fail("test leaked processes:\n  " + "\n  ".join(described))


@pytest.fixture(autouse=True)
def no_leaked_processes() -> Iterator[str]:
    """Fail the test if any process it started outlives it (waits up to 3 s)."""
    with checked_for_leaks() as tag:
        yield tag


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    """Fail the test if it leaves a non-daemon thread running (it would hang exit)."""
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + 3.0
    while True:
        extra = [
            t for t in threading.enumerate()
            if t not in before and t.is_alive() and not t.daemon
        ]
        if not extra or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    if extra:
        pytest.fail(f"test leaked non-daemon threads: {[t.name for t in extra]}")

