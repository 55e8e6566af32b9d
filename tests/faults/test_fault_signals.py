"""Stopped children, children that ignore SIGTERM, and signal storms.

A stopped (SIGSTOP) command or worker still ends by SIGTERM within the
grace: every catchable signal of the ladder is followed by SIGCONT (before,
a stopped tree sat out grace + kill_after and was SIGKILLed). A tree that
ignores SIGTERM is SIGKILLed after grace + kill_after. A storm of SIGTERMs
at a worker in its cleanup does not break its ending. Each test checks
that nothing of the tree is left (the autouse leak fixture) and that an
unrelated process was not signalled.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from escapee_targets import ignores_its_token, slow_cleanup

import quiesce

from procs import alive


def _wait_for(path: Path) -> None:
    deadline = time.monotonic() + 20
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.01)


@pytest.fixture()
def stranger() -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(["sleep", "60"])
    yield proc
    assert alive(proc.pid), "an unrelated process was signalled"
    proc.kill()
    proc.wait()


def test_a_stopped_command_ends_by_sigterm_within_the_grace(
        stranger: subprocess.Popen[bytes]) -> None:
    with quiesce.Scope(grace=3, kill_after=3) as scope:
        worker = scope.popen(["sh", "-c", "sleep 100 & echo ready; wait"],
                             stdout=subprocess.PIPE)
        assert worker.popen.stdout.readline() == b"ready\n"  # the whole group is up
        assert worker.pid is not None
        os.killpg(worker.pid, signal.SIGSTOP)  # our unreaped child leads it: ours
        started = time.monotonic()
    worker.popen.stdout.close()
    assert worker.ended_by == "terminated"
    assert time.monotonic() - started < 2.5  # not grace + kill_after


def test_a_stopped_worker_process_ends_by_sigterm_after_the_grace(
        tmp_path: Path, stranger: subprocess.Popen[bytes]) -> None:
    with quiesce.Scope(grace=0.3, kill_after=5) as scope:
        worker = scope.process(ignores_its_token, str(tmp_path / "ready"))
        _wait_for(tmp_path / "ready")
        assert worker.pid is not None
        pidfd = os.pidfd_open(worker.pid)  # alive, so ours; the pidfd keeps it so
        signal.pidfd_send_signal(pidfd, signal.SIGSTOP)
        os.close(pidfd)
        started = time.monotonic()
    assert worker.ended_by == "terminated"
    assert time.monotonic() - started < 4.0  # SIGTERM at 0.3 s, not SIGKILL at 5.3 s


def test_a_tree_that_ignores_sigterm_is_killed_after_grace_and_kill_after(
        stranger: subprocess.Popen[bytes]) -> None:
    started = time.monotonic()
    with quiesce.Scope(grace=0.3, kill_after=0.3) as scope:
        worker = scope.popen(["sh", "-c", "trap '' TERM; sleep 100 & sleep 100 & echo ready; wait"],
                             stdout=subprocess.PIPE)
        assert worker.popen.stdout.readline() == b"ready\n"  # the trap is in place
    worker.popen.stdout.close()
    assert worker.ended_by == "killed"
    assert 0.6 <= time.monotonic() - started < 8.6


def test_a_storm_of_sigterms_in_the_cleanup_does_not_break_the_ending(
        tmp_path: Path, stranger: subprocess.Popen[bytes]) -> None:
    with quiesce.Scope(grace=2, kill_after=2) as scope:
        worker = scope.process(slow_cleanup, str(tmp_path / "ready"))
        _wait_for(tmp_path / "ready")
        assert worker.pid is not None
        pidfd = os.pidfd_open(worker.pid)  # alive, so ours; the pidfd keeps it so
        scope.stop()
        try:
            for _ in range(200):
                signal.pidfd_send_signal(pidfd, signal.SIGTERM)
        except ProcessLookupError:
            pass  # it ended during the storm
        finally:
            os.close(pidfd)
    assert worker.ended_by in ("stopped", "terminated")
    assert worker.exception is None
