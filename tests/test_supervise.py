"""`quiesce run`: exit statuses, forwarding, reaping, whole-tree endings, PID 1.

In the spirit of tini's, dumb-init's and coreutils timeout's tests, through
the real command (`python -m quiesce run`), real signals and real orphans.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from procs import alive

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


def zombie_children(pid: int) -> int:
    try:
        return sum(c.status() == psutil.STATUS_ZOMBIE for c in psutil.Process(pid).children())
    except psutil.Error:
        return 0


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
    result = quiesce_run("--timeout", "300ms", "--grace", "0.5", "--",
                         "bash", "-c", f"setsid sleep 60 & echo $! > {pidfile}; sleep 60")
    assert result.returncode == 124
    assert time.monotonic() - started < 0.3 + 0.5 + MARGIN
    assert not alive(int(pidfile.read_text()))


# -- signals ---------------------------------------------------------------------------

@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGINT])
def test_signals_are_forwarded_and_status_is_128_plus_n(sig: signal.Signals) -> None:
    proc = start("--", "sleep", "30")
    try:
        wait_started(proc)
        time.sleep(0.1)  # let `sleep` exec
        proc.send_signal(sig)
        assert proc.wait(20) == 128 + sig
    finally:
        finish(proc)


def test_a_handler_behind_bash_gets_its_full_grace(tmp_path: Path) -> None:
    marker = tmp_path / "cleaned"
    proc = start("--grace", "5", "--", "bash", "-c",
                 f"trap 'sleep 1.5; echo done > {marker}; exit 0' TERM; sleep 30 & wait")
    try:
        wait_started(proc)
        time.sleep(0.2)
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
        wait_started(proc)
        time.sleep(0.2)
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
    result = quiesce_run("--grace", "1", "--", "bash", "-c",
                         escape.format(out=out) + "; sleep 0.2; exit 5")
    assert result.returncode == 5
    assert not alive(int(out.read_text())), "a leftover survived quiesce run"


def test_a_reaping_storm_leaves_no_zombie() -> None:
    """100 orphans exit while the command still runs: each is reaped at once."""
    storm = "for i in $(seq 100); do (sleep 0.3 &) ; done; sleep 3"
    proc = start("--", "bash", "-c", storm)
    try:
        wait_started(proc)
        time.sleep(1.5)  # the orphans have all exited by now
        assert zombie_children(proc.pid) == 0
        assert not [c for c in psutil.Process(proc.pid).children() if c.name() == "sleep"
                    and c.status() == psutil.STATUS_ZOMBIE]
        assert proc.wait(20) == 0
    finally:
        finish(proc)


def test_negative_control_a_subreaper_that_does_not_reap_piles_up_zombies() -> None:
    """Proves the zombie check above can fail."""
    storm = "for i in $(seq 100); do (sleep 0.3 &) ; done; sleep 3"
    proc = subprocess.Popen([sys.executable, str(PROGRAMS / "no_reaper.py"), "3", "bash", "-c",
                             storm], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        pid = int(proc.stdout.readline())
        time.sleep(1.5)
        assert zombie_children(pid) >= 90
    finally:
        proc.wait(30)


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
    marker = tmp_path / "ppid"
    argv = [*UNSHARE, *proc_mount, *QUIESCE, "run",
            "--grace", "1", "--", "bash", "-c",
            f"echo $PPID > {marker}; (setsid sleep 60 &); sleep 60"]
    proc = subprocess.Popen(argv)
    try:
        deadline = time.monotonic() + 20
        while not (marker.exists() and marker.read_text()) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert marker.read_text().strip() == "1", "quiesce is not PID 1 in the namespace"
        time.sleep(0.2)
        supervisor = psutil.Process(proc.pid).children()[0]
        supervisor.send_signal(signal.SIGTERM)  # PID 1 ignores signals it has no handler for
        assert proc.wait(20) == 128 + signal.SIGTERM
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
