"""krallin/tini's ``test/`` (run_inner_tests.py, run_outer_tests.py) ported to ``quiesce run``.

tini signals only its child unless given ``-g``; quiesce signals the
command's whole process group by default (tini ``-g``), which every test
below relies on or is indifferent to. tini's ``-s`` (subreaper) is always on.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from peerkit import PROGRAMS, QUIESCE, finish, run, wait_until

REAPING = [sys.executable, str(PROGRAMS / "reaping_stage_1.py")]
SIGCONF = [sys.executable, str(PROGRAMS / "sigconf.py"), "~TTOU", "~SEGV", "~INT", "+TTIN", "+ILL",
           "+TERM", "--"]


# -- exit code remapping (-e) ---------------------------------------------------------------

def test_expect_exit_inclusive_and_exclusive_for_every_code() -> None:
    """tini test/run_inner_tests.py, "exit code test": ``-e CODE`` maps CODE to 0 and no
    other code, for all 256 (in one process: 512 starts of the CLI would take a minute)."""
    result = subprocess.run([sys.executable, str(PROGRAMS / "expect_exit_codes.py")],
                            capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("code", [0, 1, 2, 126, 127, 255])
def test_expect_exit_through_the_real_command(code: int) -> None:
    """tini test/run_inner_tests.py, "exit code test", through ``quiesce run`` itself."""
    assert run("-e", str(code), "--", "sh", "-c", f"exit {code}").returncode == 0
    others = [arg for c in (0, 1, 3, 255) if c != code for arg in ("--expect-exit", str(c))]
    assert run(*others, "--", "sh", "-c", f"exit {code}").returncode == code


# -- reaping ----------------------------------------------------------------------------------

def test_reaping() -> None:
    """tini test/run_inner_tests.py, "reaping test": 100 orphans, all reaped, and the
    supervisor's only child left is the command (a helper would show up here)."""
    result = subprocess.run([*QUIESCE, "--", *REAPING], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_reaping_display() -> None:
    """tini test/run_inner_tests.py, "reaping display test" (tini -w; quiesce -v)."""
    result = subprocess.run([*QUIESCE, "-v", "--", *REAPING], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr.count("reaped PID") >= 100


def test_negative_control_reaping_fails_without_a_reaper() -> None:
    """tini test/run_inner_tests.py, "zombie reaping failure test": under a subreaper that
    does not reap, the same check fails (so the check above can fail)."""
    result = subprocess.run([sys.executable, str(PROGRAMS.parent.parent / "programs" /
                                                 "no_reaper.py"), "3", *REAPING, "2"],
                            capture_output=True, text=True, timeout=60)
    assert "still there" in result.stdout, result.stdout + result.stderr


UNSHARE = ["unshare", "--pid", "--fork", "--map-root-user", "--kill-child", "--mount-proc"]


def _can_unshare() -> bool:
    if shutil.which("unshare") is None:
        return False
    return subprocess.run([*UNSHARE, "true"], capture_output=True, timeout=10).returncode == 0


@pytest.mark.skipif(not _can_unshare(), reason="unshare --pid --mount-proc is refused here")
def test_reaping_as_pid_1() -> None:
    """tini test/run_outer_tests.py, the functional tests run as a container's PID 1
    (``docker run`` there; ``unshare --pid --fork --mount-proc`` here)."""
    result = subprocess.run([*UNSHARE, *QUIESCE, "--", *REAPING], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def _has_sleep(pid: int) -> bool:
    """tini counts the descendants (2, or more than 2) to know the test program is ready;
    quiesce's watcher is a descendant for a millisecond while it double-forks away, so
    here the sign is the one the count stands for: the ``sleep`` is running."""
    try:
        return any(p.name() == "sleep" for p in psutil.Process(pid).children(recursive=True))
    except psutil.Error:
        return False


# -- signals --------------------------------------------------------------------------------

@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2])
def test_signals(signum: int) -> None:
    """tini test/run_inner_tests.py, "signal test" (and run_outer_tests.py's 143/138/140):
    the signal reaches the shell's child too (it is in the group); status 128+N."""
    proc = subprocess.Popen([*QUIESCE, "--", sys.executable, str(PROGRAMS / "signals_test.py")])
    try:
        wait_until(lambda: _has_sleep(proc.pid))
        proc.send_signal(signum)
        assert proc.wait(20) == 128 + signum
    finally:
        finish(proc)


def test_process_group() -> None:
    """tini test/run_inner_tests.py, "process group test" (tini -g; quiesce's default):
    the command ignores USR1 but its child does not; USR1 to the group ends both."""
    proc = subprocess.Popen([*QUIESCE, "--", sys.executable, str(PROGRAMS / "pgroup_stage_1.py")])
    try:
        wait_until(lambda: _has_sleep(proc.pid))
        proc.send_signal(signal.SIGUSR1)
        assert proc.wait(20) == 0
    finally:
        finish(proc)


# -- signal configuration -------------------------------------------------------------------

def _mask(status: str, key: str) -> set[int]:
    line = next(line for line in status.splitlines() if line.startswith(key + ":"))
    bits = int(line.split()[1], 16)
    return {n + 1 for n in range(64) if bits >> n & 1}


def test_signal_configuration() -> None:
    """tini test/sigconf: the command inherits what quiesce was given: TTOU, SEGV and INT
    ignored (quiesce catches INT and TTOU itself to forward them), TTIN, ILL and TERM
    blocked (quiesce unblocks them for itself)."""
    result = subprocess.run([*SIGCONF, *QUIESCE, "--",
                             "cat", "/proc/self/status"], capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 0, result.stderr
    assert {signal.SIGTTOU, signal.SIGSEGV, signal.SIGINT} <= _mask(result.stdout, "SigIgn")
    assert {signal.SIGTTIN, signal.SIGILL, signal.SIGTERM} <= _mask(result.stdout, "SigBlk")
    assert not _mask(result.stdout, "SigCgt"), "a handler of quiesce leaked into the command"


def test_negative_control_signal_configuration_without_the_ignores() -> None:
    """The check above can fail: run directly, without sigconf.py, nothing is ignored."""
    result = run("--", "cat", "/proc/self/status")
    assert signal.SIGSEGV not in _mask(result.stdout, "SigIgn")
    assert signal.SIGTERM not in _mask(result.stdout, "SigBlk")


def test_blocked_term_in_the_parent_does_not_make_quiesce_deaf() -> None:
    """tini test/sigconf's blocked SIGTERM, the other way round: quiesce still gets it."""
    proc = subprocess.Popen([*SIGCONF, *QUIESCE, "-v",
                             "-k", "0.5", "--", "sleep", "30"], stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None and "started" in proc.stderr.readline()
        proc.send_signal(signal.SIGTERM)
        # The command inherited TERM blocked, as asked, so only the grace's SIGKILL ends it.
        assert proc.wait(30) == 128 + signal.SIGKILL
    finally:
        finish(proc)


# -- parent death signal (-p) ---------------------------------------------------------------

def test_parent_death_signal(tmp_path: Path) -> None:
    """tini test/pdeathsignal: ``-p SIGUSR1``: when quiesce's parent is SIGKILLed, quiesce
    gets USR1 and forwards it; the command's handler writes "ok"."""
    target = tmp_path / "result"
    target.write_text("")
    subprocess.run([sys.executable, str(PROGRAMS / "pdeathsig_stage_1.py"), *QUIESCE, "--",
                    str(target)], timeout=30)
    wait_until(lambda: target.read_text() == "ok")


# -- command line (run_outer_tests.py) ------------------------------------------------------

def test_exit_codes_of_the_command_line() -> None:
    """tini test/run_outer_tests.py, "exit code test": -z (unknown) 125 (tini 1), -h 0,
    zzzz (not found) 127."""
    assert run("-z").returncode == 125
    assert run("-h").returncode == 0
    assert run("zzzz").returncode == 127


if sys.platform != "linux":  # pragma: no cover
    pytestmark = pytest.mark.skip(reason="tini's suite is Linux-only (subreaper, /proc)")
