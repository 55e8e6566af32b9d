"""scope.popen and run_command: whole trees, escapers, pipes held by grandchildren."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import quiesce

from procs import alive, descendants_running, seconds_until_gone, wait_for

PROGRAMS = Path(__file__).parent / "programs"
DEEP_TREE = str(PROGRAMS / "deep_tree.py")
MARGIN = 8.0


def wait_for_pids(directory: Path, count: int, timeout: float = 20.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        files = [p for p in directory.iterdir() if p.read_text()]
        if len(files) >= count:
            return [int(p.read_text()) for p in files]
        time.sleep(0.02)
    raise AssertionError(f"only {len(list(directory.iterdir()))} of {count} levels started")


# -- scope.popen ---------------------------------------------------------------

def test_popen_gets_sigterm_to_its_group_at_once(tmp_path: Path) -> None:
    marker = tmp_path / "trapped"
    with quiesce.Scope(grace=30, kill_after=30) as scope:
        worker = scope.popen(["bash", "-c", f"trap 'echo yes > {marker}; exit 3' TERM; "
                              "echo ready; sleep 60 & wait"], stdout=subprocess.PIPE)
        assert worker.popen.stdout is not None  # type: ignore[attr-defined]
        assert worker.popen.stdout.readline() == b"ready\n"  # type: ignore[attr-defined]
        started = time.monotonic()
    took = time.monotonic() - started
    assert marker.read_text() == "yes\n"
    assert worker.ended_by == "terminated" and worker.exitcode == 3
    assert took < MARGIN, "the command should get SIGTERM at step 1, not after grace"


def test_popen_ignoring_sigterm_is_killed_after_grace_plus_kill_after(tmp_path: Path) -> None:
    with quiesce.Scope(grace=0.5, kill_after=0.5) as scope:
        worker = scope.popen(["bash", "-c", "trap '' TERM; echo ready; sleep 60 & wait"],
                             stdout=subprocess.PIPE)
        assert worker.popen.stdout.readline() == b"ready\n"  # type: ignore[attr-defined]
        started = time.monotonic()
    took = time.monotonic() - started
    assert worker.ended_by == "killed" and worker.exitcode == -signal.SIGKILL
    assert 0.9 <= took < 1.0 + MARGIN


def test_popen_result_is_the_exit_code() -> None:
    with quiesce.Scope() as scope:
        worker = scope.popen(["sh", "-c", "exit 5"])
        scope.join(20)
    assert (worker.ended_by, worker.result, worker.exitcode) == ("finished", 5, 5)


@pytest.mark.parametrize("trick", ["", "setsid", "doublefork"])
def test_a_ten_level_tree_is_ended_escapers_included(trick: str, tmp_path: Path) -> None:
    with quiesce.Scope(grace=0.5, kill_after=0.5) as scope:
        scope.popen([sys.executable, DEEP_TREE, "10", str(tmp_path), trick])
        pids = wait_for_pids(tmp_path, 10)
        assert sum(alive(p) for p in pids) >= 9  # the doublefork middle exits on its own
    survivors = [p for p in pids if alive(p)]
    assert survivors == []


def test_what_remains_after_the_command_exits_is_ended(tmp_path: Path) -> None:
    pidfile = tmp_path / "bg"
    with quiesce.Scope(grace=30, kill_after=0.5) as scope:
        worker = scope.popen(["bash", "-c", f"setsid sleep 60 & echo $! > {pidfile}; exit 0"])
        assert worker.join(20)
        assert worker.ended_by == "finished"
        background = int(pidfile.read_text())
        deadline = time.monotonic() + MARGIN
        while alive(background) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not alive(background), "the command's leftover process was not ended"


def test_owner_sigkilled_leaves_nothing_of_popen_trees(tmp_path: Path) -> None:
    owner = subprocess.Popen([sys.executable, str(PROGRAMS / "owner_popen.py"), str(tmp_path)],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert owner.stdout is not None
        assert owner.stdout.readline().strip() == "ready"
        pids = wait_for_pids(tmp_path, 4)
        assert all(alive(p) for p in pids)
        owner.send_signal(signal.SIGKILL)
        owner.wait(10)
        latency, survivors = seconds_until_gone(pids)
        assert survivors == []
        print(f"popen tree gone {latency * 1000:.0f} ms after the owner's SIGKILL")
        assert latency < 1.0
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait()


def test_popen_bad_input() -> None:
    with quiesce.Scope() as scope:
        with pytest.raises(FileNotFoundError, match=r"scope\.popen: command 'no-such-cmd-x'"):
            scope.popen(["no-such-cmd-x", "--flag"])
        with pytest.raises(ValueError, match="argv is empty"):
            scope.popen([])
        with pytest.raises(TypeError, match=r"argv\[1\] must be a string"):
            scope.popen(["echo", 3])  # type: ignore[list-item]
        with pytest.raises(ValueError, match="preexec_fn"):
            scope.popen(["true"], preexec_fn=print)
        assert scope.workers == []


# -- run_command ------------------------------------------------------------------

def test_run_command_does_not_wait_for_a_grandchild_holding_the_pipe() -> None:
    started = time.monotonic()
    result = quiesce.run_command(["bash", "-c", "sleep 100 & echo hi"], capture_output=True,
                                 text=True, grace=1)
    took = time.monotonic() - started
    assert (result.returncode, result.stdout) == (0, "hi\n")
    assert took < 1.0 + MARGIN


def test_negative_control_subprocess_run_waits_for_the_grandchild() -> None:
    """Proves the test above can fail: the stdlib waits for the pipe's EOF."""
    started = time.monotonic()
    subprocess.run(["bash", "-c", "sleep 2 & echo hi"], capture_output=True, timeout=30)
    assert time.monotonic() - started >= 1.9


def test_run_command_timeout_ends_the_tree_promptly(tmp_path: Path) -> None:
    pidfile = tmp_path / "bg"
    started = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired) as info:
        quiesce.run_command(
            ["bash", "-c", f"trap '' TERM; sleep 100 & echo $! > {pidfile}; echo partial; "
             "sleep 100"], capture_output=True, timeout=1.5, grace=0.5)
    took = time.monotonic() - started  # 1.5 s: bash is up and has said "partial" by then
    assert info.value.output == b"partial\n" and info.value.timeout == 1.5
    assert 1.9 <= took < 2.0 + MARGIN  # about timeout + grace: TERM is ignored here
    assert not alive(int(pidfile.read_text()))


def test_run_command_like_subprocess_run(tmp_path: Path) -> None:
    result = quiesce.run_command(["cat"], input="x\r\ny" * 50_000, capture_output=True,
                                 text=True)
    assert result.stdout == "x\ny" * 50_000
    with pytest.raises(subprocess.CalledProcessError) as info:
        quiesce.run_command(["sh", "-c", "echo oops >&2; exit 4"], stderr=subprocess.PIPE,
                            check=True)
    assert info.value.returncode == 4 and info.value.stderr == b"oops\n"
    out = quiesce.run_command("echo $((6 * 7))", shell=True, stdout=subprocess.PIPE, cwd=tmp_path)
    assert out.stdout == b"42\n"


def test_run_command_bad_input() -> None:
    with pytest.raises(FileNotFoundError, match="run_command: command 'no-such-cmd-y'"):
        quiesce.run_command(["no-such-cmd-y"])
    with pytest.raises(ValueError, match="timeout must be >= 0"):
        quiesce.run_command(["true"], timeout=-1)
    with pytest.raises(ValueError, match="grace must be a finite"):
        quiesce.run_command(["true"], grace=float("nan"))
    with pytest.raises(ValueError, match="stdin and input"):
        quiesce.run_command(["cat"], input=b"x", stdin=subprocess.DEVNULL)


def test_run_command_in_a_worker_stops_with_its_scope(tmp_path: Path) -> None:
    def runs_a_command() -> None:
        quiesce.run_command(["sleep", "60"], grace=1)

    with quiesce.Scope(grace=5, kill_after=5) as scope:
        worker = scope.thread(runs_a_command)
        wait_for(lambda: descendants_running(os.getpid(), ["sleep", "60"]), "the command to run")
        started = time.monotonic()
    assert worker.ended_by == "stopped"
    assert time.monotonic() - started < 1.0 + MARGIN


def test_interrupted_run_command_leaves_nothing(tmp_path: Path) -> None:
    """A KeyboardInterrupt in the middle still ends the whole tree."""
    pidfile = tmp_path / "bg"

    def interrupt_soon() -> None:
        while not pidfile.exists() or not pidfile.read_text():
            time.sleep(0.01)
        signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)

    # A shell starts background jobs with SIGINT ignored, and Python then installs no
    # KeyboardInterrupt handler: make sure this test has one.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    helper = threading.Thread(target=interrupt_soon, daemon=True)
    helper.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            quiesce.run_command(["bash", "-c", f"sleep 100 & echo $! > {pidfile}; sleep 100"])
    finally:
        signal.signal(signal.SIGINT, previous)
    helper.join(5)
    assert not alive(int(pidfile.read_text()))
    assert os.path.exists(pidfile)
