"""`quiesce run`: exit statuses, forwarding, reaping, whole-tree endings, PID 1.

In the spirit of tini's, dumb-init's and coreutils timeout's tests, through
the real command (`python -m quiesce run`), real signals and real orphans.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from procs import (
    alive,
    catches,
    cmdline,
    descendants_running,
    state,
    wait_for,
    wait_for_file,
)

PROGRAMS = Path(__file__).parent / "programs"
QUIESCE = [sys.executable, "-m", "quiesce"]
MARGIN = 8.0


def quiesce_run(*args: str, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*QUIESCE, "run", *args], capture_output=True, text=True,
                          timeout=60, **kw)  # type: ignore[call-overload, no-any-return]


def start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([*QUIESCE, "run", "-v", *args], stderr=subprocess.PIPE, text=True)


def wait_started(proc: subprocess.Popen[str]) -> int:
    """Read -v output until the command started; return its PID."""
    assert proc.stderr is not None
    line = proc.stderr.readline()
    assert "started" in line, line
    return int(line.split(" as PID ")[1].split()[0])


def wait_trapped(bash: int) -> None:
    """Until ``bash`` has its TERM trap set and its background ``sleep 30`` runs."""
    wait_for(lambda: catches(bash, signal.SIGTERM), "bash to set its TERM trap")
    wait_for(lambda: descendants_running(bash, ["sleep", "30"]), "bash to start `sleep 30`")


def children_of(pid: int) -> set[int]:
    """Children of ``pid``, zombies included (a zombie is a child until it is reaped)."""
    try:
        return {c.pid for c in psutil.Process(pid).children()}
    except psutil.Error:
        return set()


def finish(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stderr is not None:
        proc.stderr.close()


# -- exit statuses -------------------------------------------------------------------

def test_every_exit_code_passes_through() -> None:
    result = subprocess.run([sys.executable, str(PROGRAMS / "exit_codes.py")],
                            capture_output=True, text=True, timeout=120)
    assert result.stdout.split() == [str(n) for n in range(256)], result.stderr


@pytest.mark.parametrize("code", [0, 1, 2, 126, 127, 128, 255])
def test_exit_codes_through_the_real_command(code: int) -> None:
    assert quiesce_run("--", "sh", "-c", f"exit {code}").returncode == code


def test_death_by_signal_is_128_plus_n() -> None:
    assert quiesce_run("--", "sh", "-c", "kill -USR2 $$").returncode == 128 + signal.SIGUSR2


@pytest.mark.parametrize(("argv", "expected", "message"), [
    (["--", "no-such-command-z"], 127, "no-such-command-z: command not found"),
    (["--", "/etc/passwd"], 126, "not executable"),
    (["--grace", "soon", "--", "true"], 125, "--grace: invalid duration 'soon'"),
    (["--timeout", "-1", "--", "true"], 125, "--timeout"),
    (["--kill-after", "1x", "--", "true"], 125, "--kill-after"),
    (["--signal", "NOPE", "--", "true"], 125, "--signal: unknown signal 'NOPE'"),
    ([], 125, "give the command to run"),
])
def test_failures_and_usage_errors(argv: list[str], expected: int, message: str) -> None:
    result = quiesce_run(*argv)
    assert result.returncode == expected
    assert message in result.stderr


def test_timeout_is_124_and_ends_the_tree(tmp_path: Path) -> None:
    pidfile = tmp_path / "bg"
    started = time.monotonic()
    # 1 s: time for bash to start and write the pidfile even on a loaded machine
    result = quiesce_run("--timeout", "1s", "--grace", "0.5", "--",
                         "bash", "-c", f"setsid sleep 60 & echo $! > {pidfile}; sleep 60")
    assert result.returncode == 124
    assert time.monotonic() - started < 1 + 0.5 + MARGIN
    assert not alive(int(pidfile.read_text()))


# -- signals ---------------------------------------------------------------------------

@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGINT])
def test_signals_are_forwarded_and_status_is_128_plus_n(sig: signal.Signals) -> None:
    proc = start("--", "sleep", "30")
    try:
        command = wait_started(proc)
        # "started" comes once the exec succeeded: `sleep` runs, no Python handler of ours
        wait_for(lambda: cmdline(command) == ["sleep", "30"], "`sleep` to exec")
        proc.send_signal(sig)
        assert proc.wait(20) == 128 + sig
    finally:
        finish(proc)


def test_a_handler_behind_bash_gets_its_full_grace(tmp_path: Path) -> None:
    marker = tmp_path / "cleaned"
    proc = start("--grace", "5", "--", "bash", "-c",
                 f"trap 'sleep 1.5; echo done > {marker}; exit 0' TERM; sleep 30 & wait")
    try:
        wait_trapped(wait_started(proc))
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0  # the trap's own status: it was not killed
    finally:
        finish(proc)
    assert marker.read_text() == "done\n"


def test_a_handler_slower_than_grace_is_killed(tmp_path: Path) -> None:
    marker = tmp_path / "cleaned"
    proc = start("--grace", "0.5", "--", "bash", "-c",
                 f"trap 'sleep 10; echo done > {marker}' TERM; sleep 30 & wait")
    try:
        wait_trapped(wait_started(proc))
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 128 + signal.SIGKILL
        assert time.monotonic() - sent < 0.5 + MARGIN
    finally:
        finish(proc)
    assert not marker.exists()


# -- the tree ----------------------------------------------------------------------------

@pytest.mark.parametrize("escape", ["setsid sleep 60 & echo $! > {out}",
                                    "(sleep 60 & echo $! > {out})"], ids=["setsid", "double-fork"])
def test_leftovers_are_ended_before_quiesce_exits(escape: str, tmp_path: Path) -> None:
    out = tmp_path / "pid"
    # exit once the leftover has escaped and exec'd `sleep` (setsid runs setsid() first)
    result = quiesce_run("--grace", "1", "--", "bash", "-c",
                         escape.format(out=out) + f"; p=$(cat {out}); "
                         "until [ \"$(cat /proc/$p/comm)\" = sleep ]; do sleep 0.01; done; "
                         "exit 5")
    assert result.returncode == 5
    assert not alive(int(out.read_text())), "a leftover survived quiesce run"


def storm(directory: Path) -> str:
    """100 orphans (re-parented to the subreaper), their PIDs written to ``directory/pids``;
    then the command waits for its stdin to close."""
    pids = directory / "pids"
    return (f"for i in $(seq 100); do (sleep 60 & echo $! >> {pids}.tmp); done; "
            f"mv {pids}.tmp {pids}; read line; exit 0")


def orphans_of(supervisor: int, directory: Path) -> list[int]:
    """The storm's orphans, once every one of them runs as a child of ``supervisor``."""
    pids = [int(p) for p in wait_for_file(directory / "pids").split()]
    assert len(pids) == 100
    wait_for(lambda: set(pids) <= children_of(supervisor)
             and all(state(p) == "S" for p in pids), "100 orphans adopted by the subreaper")
    return pids


def test_a_reaping_storm_leaves_no_zombie(tmp_path: Path) -> None:
    """100 orphans die at once while the command still runs: each is reaped."""
    proc = subprocess.Popen([*QUIESCE, "run", "-v", "--", "bash", "-c", storm(tmp_path)],
                            stdin=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_started(proc)
        pids = orphans_of(proc.pid, tmp_path)  # adopted: ours to kill, quiesce's to reap
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not set(pids) & children_of(proc.pid), "every orphan to be reaped")
        assert proc.poll() is None, "reaped only because quiesce run exited"
        assert proc.stdin is not None
        proc.stdin.close()
        assert proc.wait(20) == 0
    finally:
        finish(proc)


def test_negative_control_a_subreaper_that_does_not_reap_piles_up_zombies(
        tmp_path: Path) -> None:
    """Proves the check above can fail: the same storm under a subreaper that never reaps."""
    proc = subprocess.Popen([sys.executable, str(PROGRAMS / "no_reaper.py"), "0", "bash", "-c",
                             storm(tmp_path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout is not None and proc.stdin is not None
        pid = int(proc.stdout.readline())
        pids = orphans_of(pid, tmp_path)
        for orphan in pids:
            os.kill(orphan, signal.SIGKILL)
        wait_for(lambda: all(state(p) == "Z" for p in pids), "every orphan to die")
        assert set(pids) <= children_of(pid)  # zombies, still there: the check would fail
        proc.stdin.close()
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        proc.wait(30)  # the command ended: no_reaper reaps everything and exits
        if proc.stdout is not None:
            proc.stdout.close()


# -- PID 1 ------------------------------------------------------------------------------------

UNSHARE = ["unshare", "--pid", "--fork", "--map-root-user", "--kill-child"]


def _can_unshare(*extra: str) -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run([*UNSHARE, *extra, "true"], capture_output=True, timeout=10)
    return probe.returncode == 0


@pytest.mark.parametrize("proc_mount", [
    pytest.param(["--mount-proc"], id="own-proc",
                 marks=pytest.mark.skipif(not _can_unshare("--mount-proc"),
                                          reason="unshare --pid --mount-proc fails here")),
    pytest.param([], id="host-proc",
                 marks=pytest.mark.skipif(not _can_unshare(),
                                          reason="no PID namespaces here (unshare --pid fails)")),
])
def test_as_pid_1_in_a_pid_namespace(proc_mount: list[str], tmp_path: Path) -> None:
    """With its own /proc, and blind (the host's /proc): then kill(-1) does the job."""
    marker, escaped = tmp_path / "ppid", tmp_path / "escaped"
    argv = [*UNSHARE, *proc_mount, *QUIESCE, "run",
            "--grace", "1", "--", "bash", "-c",
            f"(setsid sh -c 'echo > {escaped}; exec sleep 60' &); "
            f"until [ -s {escaped} ]; do sleep 0.01; done; echo $PPID > {marker}; sleep 60"]
    proc = subprocess.Popen(argv)
    try:
        # the escaper is in its own session; the command started, so PID 1's handlers are set
        assert wait_for_file(marker).strip() == "1", "quiesce is not PID 1 in the namespace"
        supervisor = psutil.Process(proc.pid).children()[0]
        supervisor.send_signal(signal.SIGTERM)  # PID 1 ignores signals it has no handler for
        assert proc.wait(20) == 128 + signal.SIGTERM
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
