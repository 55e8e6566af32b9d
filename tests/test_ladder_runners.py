"""Ladder runners: a stop that is not leaving a block reuses an idle ladder thread.

Starting a thread per stop delayed every woken worker (see
``_scope/_ladder_runners.py``); a runner that ended its ladder waits for the
next. These tests look at the thread that runs each ladder while it runs (it
bears the scope's name then), and at a forked child, whose copies of the
parent's idle runners do not exist.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time

import quiesce


def _ladder_thread_of(scope_name: str, seen: list[int], token: quiesce.StopToken) -> None:
    """A worker: once stopped, note the native id of the thread running its scope's ladder."""
    token.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # the ladder waits for this very worker: it is there
        for thread in threading.enumerate():
            if thread.name == f"quiesce-ladder-{scope_name}" and thread.native_id is not None:
                seen.append(thread.native_id)
                return
        time.sleep(0.001)


def _runner_ids() -> set[int]:
    return {t.native_id for t in threading.enumerate()
            if t.name.startswith("quiesce-ladder") and t.native_id is not None}


def test_stops_in_a_row_reuse_idle_ladder_threads() -> None:
    seen: list[int] = []
    runners: set[int] = set()
    for n in range(3):
        name = f"reuse-{n}"
        with quiesce.Scope(grace=5, kill_after=1, name=name) as scope:
            scope.thread(_ladder_thread_of, name, seen)
            scope.stop("next")  # not leaving the block: a ladder thread runs it
            assert scope.join(timeout=10)
        if n == 0:
            runners = _runner_ids()  # idle now: this one, and any an earlier test left
    assert len(seen) == 3, "a ladder thread was never seen"
    assert set(seen[1:]) <= runners, f"a stop started a thread of its own: {seen}, {runners}"


_FORKED = textwrap.dedent("""
    import os, quiesce

    def wait(token):
        token.wait()

    with quiesce.Scope(grace=5, kill_after=1) as scope:  # leaves an idle runner behind
        scope.thread(wait)
        scope.stop()
        scope.join(timeout=10)
    pid = os.fork()
    if pid == 0:  # the runner is the parent's: here the ladder needs a thread of its own
        with quiesce.Scope(grace=5, kill_after=1) as scope:
            scope.thread(wait)
            scope.stop()
            print("child joined", scope.join(timeout=10), flush=True)
        os._exit(0)
    os.waitpid(pid, 0)
""")


def test_a_forked_child_does_not_count_on_its_parents_runners() -> None:
    done = subprocess.run([sys.executable, "-c", _FORKED], capture_output=True, text=True,
                          timeout=40)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "child joined True\n", done.stderr


def test_an_idle_runner_leaves_no_non_daemon_thread() -> None:
    with quiesce.Scope(grace=5, kill_after=1) as scope:
        scope.stop()
    runners = [t for t in threading.enumerate() if t.name.startswith("quiesce-ladder")]
    assert runners and all(t.daemon for t in runners)  # never holding up interpreter exit
