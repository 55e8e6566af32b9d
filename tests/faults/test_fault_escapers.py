"""Descendants that fork without exec (setsid, double fork, fork bombs) are ended too.

They carry no tag /proc can show (no exec), leave the worker's process
group (setsid) and its ancestry (double fork). A scope process worker is
a child subreaper, so they re-parent to it, and the ladder stops the tree
before walking it. Two ways out: the worker obeys its token and returns
(it ends its own descendants before exiting), or it ignores SIGTERM and
the ladder's SIGKILL step stops and kills the tree, members before the
root. Before this, ~190 of 200 such processes survived.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
from escapers import expected, fork_escapers, kill_survivors, survivors

import quiesce

from procs import alive


def _run_scope(tmp_path: Path, *, roots: int, depth: int, ignore_term: bool,
               obey: bool) -> tuple[int, list[str]]:
    marks, ready = tmp_path / "marks", tmp_path / "ready"
    marks.mkdir()
    stranger = subprocess.Popen(["sleep", "60"])  # not ours to end: must survive
    try:
        with quiesce.Scope(grace=0.5, kill_after=0.5) as scope:
            scope.process(fork_escapers, str(marks), str(ready), roots, depth, ignore_term, obey)
            deadline = time.monotonic() + 30
            while not ready.exists():
                assert time.monotonic() < deadline, "the escapers never all started"
                time.sleep(0.02)
        time.sleep(0.1)  # deliberate observation window: a stray signal would land by now
        assert alive(stranger.pid), "an unrelated process was signalled"
        return len(os.listdir(marks)), survivors(str(marks))
    finally:
        stranger.kill()
        stranger.wait()
        kill_survivors(str(marks))  # a failing run must not leave a fork bomb behind


@pytest.mark.slow
@pytest.mark.timeout(90)
@pytest.mark.parametrize("obey", [True, False], ids=["worker-returns", "worker-killed"])
def test_setsid_escapers_without_exec_are_ended(tmp_path: Path, obey: bool) -> None:
    started, left = _run_scope(tmp_path, roots=4, depth=0, ignore_term=True, obey=obey)
    assert started == expected(4, 0)
    assert left == []


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.parametrize("obey", [True, False], ids=["worker-returns", "worker-killed"])
def test_a_bounded_fork_bomb_of_setsid_escapers_is_ended(tmp_path: Path, obey: bool) -> None:
    started, left = _run_scope(tmp_path, roots=2, depth=5, ignore_term=True, obey=obey)
    assert started == expected(2, 5) == 126
    assert left == []
