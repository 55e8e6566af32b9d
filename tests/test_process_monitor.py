"""The process workers' shared monitor and the cheap proof that a child left nothing.

One thread (``quiesce-monitor``) watches every process worker that has a
pidfd; after each exit, the children lists of the root's ancestors tell
whether anything of its tree can be alive (see _proc/_lineage), and only
then is /proc scanned. These tests run real processes: many ending at
once, a result bigger than a pipe, a failure whose callbacks block, a
worker without a pidfd, and an escaper left behind by a worker that skips
its own cleanup, which must still be ended.
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import monitor_targets as targets
import quiesce
from quiesce._proc import _lineage, _platform, _proctree
from quiesce._proc._fd_monitor import FdMonitor
from quiesce._scope import _process_worker

from procs import alive, wait_for_file

METHODS = ["fork", "forkserver", "spawn"]


def _threads_named(prefix: str) -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith(prefix)]


@pytest.mark.parametrize("method", ["fork", "forkserver"])
def test_many_workers_ending_at_once_are_all_reaped_by_one_monitor(method: str) -> None:
    with quiesce.Scope(mp_context=method) as scope:
        workers = [scope.process(targets.square, i) for i in range(24)]
        scope.join()
    assert [w.result for w in workers] == [i * i for i in range(24)]
    assert {w.ended_by for w in workers} == {"finished"}
    assert {w.exitcode for w in workers} == {0}
    assert _threads_named("quiesce-monitor") == ["quiesce-monitor"]  # none per worker



@pytest.mark.parametrize("method", ["fork", "forkserver"])
def test_another_thread_polling_multiprocessing_children_leaves_the_status_to_us(
        method: str) -> None:
    """multiprocessing polls every child it lists at each Process.start() and in
    active_children(), from any thread. A poll racing ours for a fork server child's
    status made an exit 0 read as 255 (one run in fifteen of the test above)."""
    import multiprocessing

    done = threading.Event()

    def poll_children() -> None:
        while not done.wait(0.0002):
            multiprocessing.active_children()

    poller = threading.Thread(target=poll_children)
    poller.start()
    try:
        with quiesce.Scope(mp_context=method) as scope:
            waiting = scope.process(targets.wait_for_stop)
            # Deterministic half: multiprocessing does not list it, so cannot poll it.
            assert multiprocessing.active_children() == []
            workers = [scope.process(targets.square, i) for i in range(24)]
            for worker in workers:
                assert worker.join(30)
            waiting.stop()
    finally:
        done.set()
        poller.join(30)
    assert [w.result for w in workers] == [i * i for i in range(24)]
    assert [w.exitcode for w in workers] == [0] * 24
    assert waiting.ended_by == "stopped"

def test_workers_stopped_together_end_by_their_tokens() -> None:
    with quiesce.Scope(grace=5, kill_after=1, mp_context="forkserver") as scope:
        workers = [scope.process(targets.wait_for_stop) for _ in range(8)]
    assert [w.result for w in workers] == ["stopped"] * 8
    assert {w.ended_by for w in workers} == {"stopped"}


def test_a_result_bigger_than_the_pipe_arrives_whole() -> None:
    size = 3 * 1024 * 1024  # written in pieces while the child runs
    with quiesce.Scope() as scope:
        worker = scope.process(targets.big_result, size)
        scope.join()
    assert worker.result == targets.big_result(size)


def test_a_failure_is_recorded_off_the_monitor_so_blocking_callbacks_cannot_stall_it() -> None:
    seen: dict[str, object] = {}
    callback_done = threading.Event()
    with pytest.raises(ValueError, match="boom"), quiesce.Scope(grace=5, kill_after=1) as scope:
        slow = scope.process(targets.wait_for_stop)  # ends only once the failure stops it

        def on_stop() -> None:  # runs in the thread that records the failure
            seen["thread"] = threading.current_thread().name
            seen["joined"] = slow.join(10)  # needs the monitor to reap `slow` meanwhile
            callback_done.set()

        scope.token.on_stop(on_stop)
        scope.process(targets.fail, "boom")
        scope.join()
    assert callback_done.wait(20)  # it may still be running as the scope ends
    assert seen["joined"] is True
    assert seen["thread"] != "quiesce-monitor"


def test_a_worker_without_a_pidfd_gets_a_thread_of_its_own_beside_the_monitor(
        monkeypatch: pytest.MonkeyPatch) -> None:
    with quiesce.Scope() as scope:
        with monkeypatch.context() as patch:
            patch.setattr(_platform, "pidfd_open", lambda pid: None)  # as on Linux < 5.3
            legacy = scope.process(targets.square, 3)
        shared = scope.process(targets.square, 4)
        assert any(n.startswith("quiesce-monitor-") for n in _threads_named("quiesce-monitor"))
        scope.join()
    assert (legacy.result, shared.result) == (9, 16)
    assert (legacy.ended_by, shared.ended_by) == ("finished", "finished")


def _read_pid(pidfile: Path) -> int:
    return int(wait_for_file(pidfile))


def _wait_gone(pidfd: int, limit: float) -> bool:
    return bool(select.select([pidfd], [], [], limit)[0])


@pytest.mark.parametrize("method", METHODS)
def test_a_setsid_escaper_left_by_a_worker_that_skips_its_cleanup_is_ended(
        tmp_path: Path, method: str) -> None:
    # The worker os._exit()s right after starting it: its bootstrap never ends it, and
    # it is re-parented away from the tree. Only the owner's look after the exit finds it.
    pidfile = tmp_path / "pid"
    with pytest.raises(quiesce.ProcessDied), \
            quiesce.Scope(grace=5, kill_after=1, mp_context=method) as scope:  # no result
        worker = scope.process(targets.leave_a_setsid_escaper, str(pidfile))
        scope.join()
    pid = _read_pid(pidfile)
    assert worker.exitcode == 0
    assert not alive(pid), "the escaper outlived its worker's scope"


def test_negative_control_the_escaper_outlives_a_plain_multiprocessing_worker(
        tmp_path: Path) -> None:
    import multiprocessing

    pidfile = tmp_path / "pid"
    proc = multiprocessing.get_context("fork").Process(
        target=targets.leave_a_setsid_escaper, args=(str(pidfile),))
    proc.start()
    proc.join(20)
    pid = _read_pid(pidfile)
    pidfd = os.pidfd_open(pid)  # before anything can reap it: PID-reuse safe
    try:
        assert not _wait_gone(pidfd, 0.5), "the escaper died without quiesce: no control"
        signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        assert _wait_gone(pidfd, 10)
    finally:
        os.close(pidfd)


# -- exits held for one walk ------------------------------------------------------------
def _started(scope: quiesce.Scope, target: object, *args: object) -> quiesce.Worker:
    ready = quiesce.StopToken()
    worker = scope.process(target, ready, *args)  # type: ignore[arg-type]
    assert ready.wait(30), "the worker never started"
    return worker


class _Walks:
    """Counts the lineage walks (``_lineage.Lineage`` reads) the monitor makes.

    Not those of a thread that ends a tree by the ladder: a root started in
    the same clock tick as a helper of ours (the guardian) cannot be proved
    to have left nothing, and its reap walks again before scanning /proc.
    """

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        real = _lineage.Lineage

        def counted(*args: object) -> _lineage.Lineage:
            if threading.current_thread().name == "quiesce-monitor":
                self.count += 1
            return real(*args)  # type: ignore[arg-type]

        monkeypatch.setattr(_lineage, "Lineage", counted)


@pytest.mark.parametrize("method", ["fork", "forkserver"])
def test_workers_stopped_together_share_one_walk_while_the_hold_lasts(
        method: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_process_worker._Held, "HOLD", 60.0)  # only the last exit ends it
    walks = _Walks(monkeypatch)
    release = tmp_path / "release"
    seen = [quiesce.StopToken() for _ in range(6)]
    with quiesce.Scope(grace=30, kill_after=1, mp_context=method) as scope:
        workers = [_started(scope, targets.exit_on_release, s, str(release)) for s in seen]
        scope.stop()
        assert all(s.wait(30) for s in seen)  # every token stopped before any exit
        release.touch()
    assert [w.result for w in workers] == ["stopped"] * 6
    assert walks.count == 1


def test_negative_control_workers_that_are_not_stopped_each_walk_at_once(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_process_worker._Held, "HOLD", 60.0)
    walks = _Walks(monkeypatch)
    with quiesce.Scope(mp_context="forkserver") as scope:
        for i in range(3):  # one after another: nothing is held for a sibling
            assert scope.process(targets.square, i).join(30)
    assert walks.count == 3


def test_a_sibling_that_ignores_its_stop_holds_the_others_no_longer_than_the_hold(
        tmp_path: Path) -> None:
    release = tmp_path / "release"
    with quiesce.Scope(grace=60, kill_after=1, mp_context="forkserver") as scope:
        stubborn = _started(scope, targets.ignore_stop_until, quiesce.StopToken(), str(release))
        quick = [_started(scope, targets.wait_for_stop_after) for _ in range(3)]
        scope.stop()
        try:
            assert all(w.join(30) for w in quick), "held for a sibling that does not exit"
            assert stubborn.ended_by is None and stubborn.pid is not None
            assert alive(stubborn.pid)
        finally:
            release.touch()
    assert [w.ended_by for w in quick] == ["stopped"] * 3
    assert stubborn.result == "released"


def test_negative_control_without_the_hold_s_limit_the_others_wait_for_the_last_exit(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_process_worker._Held, "HOLD", 60.0)
    release, quick_release = tmp_path / "release", tmp_path / "quick"
    seen = [quiesce.StopToken(), quiesce.StopToken()]
    with quiesce.Scope(grace=60, kill_after=1, mp_context="forkserver") as scope:
        stubborn = _started(scope, targets.ignore_stop_until, seen[0], str(release))
        quick = _started(scope, targets.exit_on_release, seen[1], str(quick_release))
        scope.stop()
        try:
            assert all(s.wait(30) for s in seen)  # the stubborn one counts as stopping
            quick_release.touch()
            assert not quick.join(1.0), "not held: the test above proves nothing"
        finally:
            release.touch()
        assert quick.join(30) and stubborn.join(30)  # the last exit walks for both
    assert quick.ended_by == "stopped"


@pytest.mark.parametrize("method", METHODS)
def test_a_setsid_escaper_started_as_a_held_worker_exits_is_found_and_ended(
        tmp_path: Path, method: str) -> None:
    # Stopped together with its siblings, the worker starts `setsid sleep 60` and
    # os._exit()s: its walk is held for the siblings, and must still see the escaper.
    pidfile = tmp_path / "pid"
    with pytest.raises(quiesce.ProcessDied), \
            quiesce.Scope(grace=5, kill_after=1, mp_context=method) as scope:
        siblings = [_started(scope, targets.wait_for_stop_after) for _ in range(3)]
        leaver = _started(scope, targets.escape_when_stopped, str(pidfile))
    pid = _read_pid(pidfile)
    assert leaver.exitcode == 0
    assert [w.result for w in siblings] == ["stopped"] * 3
    assert not alive(pid), "the escaper outlived its worker's scope"


def test_monitor_timers_run_in_the_monitor_in_time_order_past_a_failing_one(
        caplog: pytest.LogCaptureFixture) -> None:
    monitor = FdMonitor.get()
    ran: list[tuple[str, str]] = []
    done = threading.Event()
    rfd, wfd = os.pipe()

    def record(name: str) -> Callable[[float], None]:
        def timer(woke_at: float) -> None:
            ran.append((name, threading.current_thread().name))
            if name == "last":
                done.set()
        return timer

    def fail(woke_at: float) -> None:
        raise RuntimeError("a failing timer")

    def on_readable(woke_at: float) -> None:
        os.read(rfd, 1)
        monitor.remove(rfd)
        monitor.call_at(woke_at + 0.05, record("last"))
        monitor.call_at(woke_at + 0.02, record("second"))
        monitor.call_at(woke_at, fail)
        monitor.call_at(woke_at, record("first"))

    try:
        monitor.add(rfd, on_readable)
        os.write(wfd, b"x")
        assert done.wait(20)
    finally:
        monitor.remove(rfd)
        os.close(rfd)
        os.close(wfd)
    assert ran == [("first", "quiesce-monitor"), ("second", "quiesce-monitor"),
                   ("last", "quiesce-monitor")]
    assert "error in a process monitor timer" in caplog.text
    with pytest.raises(RuntimeError, match="monitor's own callbacks"):
        monitor.call_at(time.monotonic(), record("never"))  # not from the monitor thread


# -- the lineage itself ----------------------------------------------------------------
def _start(argv: list[str]) -> tuple[subprocess.Popen[bytes], int]:
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE)
    return proc, _proctree.start_time(proc.pid)


def test_lineage_says_nothing_is_left_once_a_child_and_its_children_are_gone() -> None:
    proc, start = _start(["sh", "-c", "sleep 0.01 & wait"])
    proc.wait()
    lineage = _lineage.Lineage(os.getpid())
    assert lineage.complete
    assert lineage.left_nothing(proc.pid, start, lambda pid, started: False)


def test_lineage_sees_a_setsid_grandchild_that_outlived_its_parent() -> None:
    proc, start = _start(["sh", "-c", "setsid sleep 60 >/dev/null & echo $!"])
    assert proc.stdout is not None
    grandchild = int(proc.stdout.readline())
    proc.wait()
    proc.stdout.close()
    pidfd = os.pidfd_open(grandchild)
    try:
        lineage = _lineage.Lineage(os.getpid())
        assert lineage.complete
        assert not lineage.left_nothing(proc.pid, start, lambda pid, started: False)
        # in a session of its own, young: the session rule must not take it for a stranger
        assert not lineage.left_nothing(proc.pid, start, lambda pid, started: False,
                                        (os.getsid(0),))
        signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        assert _wait_gone(pidfd, 10)
    finally:
        os.close(pidfd)


def test_a_young_stranger_adopted_by_the_chain_is_told_apart_by_its_session() -> None:
    # Another program's orphan, adopted by init (here: by a subreaper on the chain) after
    # the root started, used to make every proof fail; its session, led by a process
    # older than the root, proves it a stranger (see the program's docstring).
    done = subprocess.run([sys.executable, str(PROGRAMS / "lineage_sessions.py")],
                          capture_output=True, text=True, timeout=40)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines() == [
        "with sessions: True",
        "without sessions: False",
        "own session: False",
        "leader gone: False",
    ], done.stdout + done.stderr


def test_lineage_tells_a_process_gone_from_one_it_cannot_read() -> None:
    proc = subprocess.Popen(["sleep", "60"])
    try:
        assert not _lineage._gone(proc.pid)  # alive
        assert not _lineage._gone(1)  # init: alive, perhaps not ours to signal (EPERM)
        proc.kill()
        proc.wait()
        assert _lineage._gone(proc.pid)  # reaped: the number is free (until reused)
        assert _lineage.children_of(proc.pid) == []
    finally:
        if proc.returncode is None:
            proc.kill()
            proc.wait()


def test_lineage_lists_children_started_by_any_thread() -> None:
    started: list[subprocess.Popen[bytes]] = []
    thread = threading.Thread(target=lambda: started.append(subprocess.Popen(["sleep", "60"])))
    thread.start()
    thread.join()
    try:
        assert started[0].pid in (_lineage.children_of(os.getpid()) or [])
    finally:
        started[0].kill()
        started[0].wait()


PROGRAMS = Path(__file__).parent / "faults" / "programs"


@pytest.mark.skipif(shutil.which("prlimit") is None, reason="prlimit(1) is not installed")
def test_running_out_of_fds_at_any_step_of_a_start_never_hangs_or_leaves_a_child() -> None:
    done = subprocess.run(["prlimit", "--nofile=96:96", sys.executable,
                           str(PROGRAMS / "monitor_emfile.py")],
                          capture_output=True, text=True, timeout=50)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert any("raised OSError 24" in line for line in lines), lines  # the limit did bite
    assert all(line.split(": ", 1)[1].startswith(("finished 49", "raised"))
               for line in lines), lines
    assert lines[-1] == "after: finished 49", lines


def test_when_the_monitor_thread_cannot_start_the_child_is_ended_and_the_error_raised() -> None:
    done = subprocess.run([sys.executable, str(PROGRAMS / "monitor_no_thread.py"), "as"],
                          cwd="/", capture_output=True, text=True, timeout=40)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "cannot start a thread: can't start new thread",
        "raised RuntimeError: can't start new thread",
        "children 0",
        "exited",
    ], done.stdout + done.stderr


@pytest.mark.parametrize("run", range(6))
def test_fork_started_workers_handed_tokens_never_hang_in_an_inherited_import_lock(
        run: int) -> None:
    done = subprocess.run([sys.executable, str(PROGRAMS / "fork_first_fd.py")],
                          capture_output=True, text=True, timeout=40)
    assert done.stdout.splitlines() == ["ok"], done.stdout + done.stderr
