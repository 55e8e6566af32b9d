"""coreutils ``tests/timeout/*.sh`` (GNU ``timeout``) ported to ``quiesce run --timeout``.

GNU writes ``timeout [-s SIG] [-k S] DURATION COMMAND``; quiesce writes
``quiesce run [-s SIG] [-k S] --timeout DURATION -- COMMAND``. Statuses,
duration syntax and signal options are GNU's (docs/command-line.md lists
the deliberate differences).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from peerkit import MARGIN, PROGRAMS, QUIESCE, finish, run, wait_until

# -- timeout.sh ----------------------------------------------------------------------------


@pytest.mark.parametrize("duration", ["10", "1d", "0"])
def test_no_timeout(duration: str) -> None:
    """coreutils tests/timeout/timeout.sh: "no timeout", "(suffix check)", "disabled timeout"."""
    assert run("--timeout", duration, "--", "true").returncode == 0


def test_zero_means_no_timeout_at_all() -> None:
    """coreutils tests/timeout/timeout.sh "disabled timeout", made able to fail: with
    ``--timeout 0`` a command outlasting "0 s" is not timed out."""
    assert run("--timeout", "0", "--", "sleep", "0.3").returncode == 0


def test_exit_status_propagation() -> None:
    """coreutils tests/timeout/timeout.sh: "exit status propagation"."""
    assert run("--timeout", "10", "--", "sh", "-c", "exit 2").returncode == 2


def test_timeout() -> None:
    """coreutils tests/timeout/timeout.sh: "timeout" is 124."""
    assert run("--timeout", ".1", "--", "sleep", "10").returncode == 124


def test_preserve_status() -> None:
    """coreutils tests/timeout/timeout.sh: "exit status propagation even on timeout"."""
    result = run("--preserve-status", "--timeout", ".1", "--", "sleep", "10")
    assert result.returncode == 128 + signal.SIGTERM


@pytest.mark.parametrize("foreground", [[], ["--foreground"]], ids=["group", "foreground"])
def test_kill_delay_is_137(foreground: list[str]) -> None:
    """coreutils tests/timeout/timeout.sh: "kill delay" and "a consistent exit status with
    --foreground": ``-s0 -k1``: no signal at the timeout, SIGKILL 1 s later: 137, not 124."""
    started = time.monotonic()
    result = run(*foreground, "-s0", "-k1", "--timeout", ".1", "--", "sleep", "10")
    assert result.returncode == 128 + signal.SIGKILL
    assert 1.0 <= time.monotonic() - started < 1.1 + MARGIN


def test_immune_to_an_ignored_sigchld() -> None:
    """coreutils tests/timeout/timeout.sh: "immune to parent's SIGCHLD handler"."""
    started = time.monotonic()
    result = subprocess.run(["sh", "-c", f"trap '' CHLD; exec {' '.join(QUIESCE)} "
                             "--timeout 10 -- true"], timeout=60)
    assert result.returncode == 0
    assert time.monotonic() - started < 5


def test_not_confused_by_an_earlier_child() -> None:
    """coreutils tests/timeout/timeout.sh: "Don't be confused when starting off with a
    child (Bug#9098)": the shell execs quiesce while its ``sleep`` still runs."""
    result = subprocess.run(["sh", "-c", f"sleep .1 & exec {' '.join(QUIESCE)} --timeout .5 "
                             "-- sh -c 'sleep 2; echo foo'"], capture_output=True, text=True,
                            timeout=60)
    assert (result.stdout, result.returncode) == ("", 124)


@pytest.mark.parametrize("flag", ["-v", "--verbose"])
def test_verbose(flag: str) -> None:
    """coreutils tests/timeout/timeout.sh: "Verify --verbose output" (quiesce's wording)."""
    result = run(flag, "-s0", "-k", ".1", "--timeout", ".1", "--", "sleep", "10")
    assert result.returncode == 128 + signal.SIGKILL
    assert "timeout after 0.1 s: sending no signal (-s 0)" in result.stderr
    assert "grace over: SIGKILL" in result.stderr
    assert result.stderr.endswith("exit status 137\n")


# -- timeout-parameters.sh -----------------------------------------------------------------

@pytest.mark.parametrize(("args", "names"), [
    (["--timeout", "invalid"], "--timeout"),
    (["--kill-after=invalid", "--timeout", "1"], "--kill-after"),
    (["-k", "invalid", "--timeout", "1"], "-k"),
    (["--timeout", "42D"], "--timeout"),
    (["--signal=invalid", "--timeout", "1"], "--signal"),
    (["-s", "invalid"], "-s"),
    (["--timeout", "-1"], "--timeout"),
])
def test_internal_errors_are_125(args: list[str], names: str) -> None:
    """coreutils tests/timeout/timeout-parameters.sh: invalid timeout, kill delay,
    suffix and signal are 125; quiesce's message names the option as written."""
    result = run(*args, "--", "sleep", "0")
    assert result.returncode == 125
    assert f"quiesce run: error: {names}: " in result.stderr


@pytest.mark.parametrize("duration", ["10.34", "9.999999999"])
def test_floating_point_notation(duration: str) -> None:
    """coreutils tests/timeout/timeout-parameters.sh: "floating point notation",
    "nanoseconds potentially supported"."""
    assert run("--timeout", duration, "--", "sleep", "0").returncode == 0


def test_invalid_command_is_126() -> None:
    """coreutils tests/timeout/timeout-parameters.sh: "invalid command" (``.``)."""
    assert run("--timeout", "10", "--", ".").returncode == 126


def test_no_such_command_is_127() -> None:
    """coreutils tests/timeout/timeout-parameters.sh: "no such command"."""
    assert run("--timeout", "10", "--", "no_such").returncode == 127


# -- timeout-large-parameters.sh -----------------------------------------------------------

TIME_T_OFLOW = str(2**63)
UINT_OFLOW = str(2**32)
LDBL_MAX = "1.18973149535723176502e+4932"


def test_huge_timeout_does_not_fire_at_once() -> None:
    """coreutils tests/timeout/timeout-large-parameters.sh: a time_t overflow must not
    make the timer fire immediately."""
    assert run("--timeout", TIME_T_OFLOW, "--", "sleep", "0.3").returncode == 0


@pytest.mark.parametrize("duration", [UINT_OFLOW, f"{TIME_T_OFLOW}d", "2.34e+5d", LDBL_MAX,
                                      "99999999999999", "inf"])
def test_huge_durations_mean_for_ever(duration: str) -> None:
    """coreutils tests/timeout/timeout-large-parameters.sh: "timeout overflow", "floating
    point notation", "floating point overflow" (and issue #10's OverflowError)."""
    result = run("--timeout", duration, "-k", duration, "--", "sleep", "0")
    assert (result.returncode, result.stderr) == (0, "")


def test_negative_huge_is_125() -> None:
    """coreutils tests/timeout/timeout-large-parameters.sh: ``-LDBL_MAX`` is 125."""
    assert run("--timeout", f"-{LDBL_MAX}", "--", "sleep", "0").returncode == 125


def test_underflow_times_out_at_once() -> None:
    """coreutils tests/timeout/timeout-large-parameters.sh: "underflow times out
    immediately" (``1e-5000``; here ``1e-10000``)."""
    started = time.monotonic()
    assert run("--timeout", "1e-10000", "--", "sleep", "10").returncode == 124
    assert time.monotonic() - started < 5


# -- timeout-blocked.pl ----------------------------------------------------------------------

@pytest.mark.parametrize("blocked", ["+ALRM", "+CHLD"])
def test_blocked_signals_in_the_parent(blocked: str) -> None:
    """coreutils tests/timeout/timeout-blocked.pl: a blocked SIGALRM from the parent
    (and issue #10: a blocked SIGCHLD) changes nothing: 124 after 0.1 s."""
    started = time.monotonic()
    result = subprocess.run([sys.executable, str(PROGRAMS / "sigconf.py"), blocked, "--", *QUIESCE,
                             "--timeout", ".1", "--", "sleep", "10"], timeout=60)
    assert result.returncode == 124
    assert time.monotonic() - started < 0.1 + MARGIN


# -- timeout-group.sh --------------------------------------------------------------------------

def _wait_running(where: Path) -> None:
    wait_until(lambda: (where / "timeout.running").exists(), timeout=20)


def _group(tmp_path: Path, script: str) -> None:
    group_sh = tmp_path / "group.sh"
    group_sh.write_text(script)
    group_sh.chmod(0o755)
    proc = subprocess.Popen([str(group_sh)], cwd=tmp_path, start_new_session=True)
    try:
        _wait_running(tmp_path)
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(30) is not None
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        finish(proc)


def test_foreground_ctrl_c_to_the_group(tmp_path: Path) -> None:
    """coreutils tests/timeout/timeout-group.sh, first part, with the command in the
    script's foreground: a Ctrl-C to the group (``kill -INT -- -PGID``) reaches the
    ``--foreground`` command, whose INT trap runs."""
    _group(tmp_path, f"#!/bin/sh\n{' '.join(QUIESCE)} --foreground --timeout 25 -- "
                     f"{PROGRAMS / 'timeout_cmd.sh'} 200\n")
    assert (tmp_path / "int.received").exists()


def test_foreground_ignored_int_stays_ignored(tmp_path: Path) -> None:
    """coreutils tests/timeout/timeout-group.sh, first part, as written there (INT
    ignored by the script, command in the background). Differs on purpose: GNU
    timeout catches INT and so hands the command a *default* INT, which its trap
    then catches; quiesce hands on the state it was given (SPEC; tini's sigconf test),
    so the command's shell cannot trap the ignored INT. The INT still reaches quiesce,
    which stops: the command is SIGKILLed after the grace (-k 1) instead of hanging."""
    started = time.monotonic()
    _group(tmp_path, f"#!/bin/sh\ntrap '' INT\n{' '.join(QUIESCE)} --foreground -k 1 "
                     f"--timeout 25 -- {PROGRAMS / 'timeout_cmd.sh'} 200 &\nwait\n")
    assert not (tmp_path / "int.received").exists()
    assert time.monotonic() - started < 1 + MARGIN


def test_cascaded_timeouts(tmp_path: Path) -> None:
    """coreutils tests/timeout/timeout-group.sh, "cascaded timeouts": SIGALRM to the outer
    supervisor is "time is up"; it sends its ``-s ALRM`` to the inner one, whose time is
    then up too: the command gets the inner ``-s INT``, both exit 124, in well under 20 s."""
    started = time.monotonic()
    proc = subprocess.Popen([*QUIESCE, "-s", "ALRM", "--timeout", "30", "--", *QUIESCE,
                             "-s", "INT", "--timeout", "25", "--",
                             str(PROGRAMS / "timeout_cmd.sh"), "200"], cwd=tmp_path)
    try:
        _wait_running(tmp_path)
        proc.send_signal(signal.SIGALRM)
        assert proc.wait(30) == 124
        assert (tmp_path / "int.received").exists()
        assert time.monotonic() - started < 20
    finally:
        finish(proc)


def test_cascade_alrm_over_usr1(tmp_path: Path) -> None:
    """quiesce issue #10: nested ``--signal ALRM`` over ``--signal USR1`` left 3 orphans
    and exit 142; now the command gets USR1, the status is 124, nothing is left."""
    marker = tmp_path / "usr1"
    script = (f"import signal, sys, time\n"
              f"def got(*a):\n    open({str(marker)!r}, 'w').close(); sys.exit(3)\n"
              f"signal.signal(signal.SIGUSR1, got)\nprint('ready', flush=True)\ntime.sleep(30)\n")
    proc = subprocess.Popen([*QUIESCE, "-s", "ALRM", "--timeout", "30", "--", *QUIESCE,
                             "-s", "USR1", "--timeout", "25", "--", sys.executable, "-c", script],
                            stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
        proc.send_signal(signal.SIGALRM)
        assert proc.wait(30) == 124
        assert marker.exists()
    finally:
        finish(proc)


def test_alrm_without_timeout_is_forwarded() -> None:
    """The other side of the cascade: without ``--timeout`` SIGALRM is just forwarded."""
    proc = subprocess.Popen([*QUIESCE, "-v", "--", "sleep", "30"], stderr=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stderr is not None and "started" in proc.stderr.readline()
        proc.send_signal(signal.SIGALRM)
        assert proc.wait(20) == 128 + signal.SIGALRM
    finally:
        finish(proc)


# -- init-parent.sh ---------------------------------------------------------------------------

UNSHARE = ["unshare", "--pid", "--fork", "--map-root-user"]


def _can_unshare() -> bool:
    import shutil

    if shutil.which("unshare") is None:
        return False
    return subprocess.run([*UNSHARE, "true"], capture_output=True, timeout=10).returncode == 0


@pytest.mark.skipif(not _can_unshare(), reason="unshare --pid --map-root-user is refused here")
def test_init_as_parent() -> None:
    """coreutils tests/timeout/init-parent.sh: with PID 1 as its parent (a container's
    entrypoint), ``--timeout`` neither fires at once nor fails to fire."""
    assert subprocess.run([*UNSHARE, *QUIESCE, "--timeout", "10", "--", "sleep", "0.2"],
                          timeout=60).returncode == 0
    assert subprocess.run([*UNSHARE, *QUIESCE, "--timeout", ".1", "--", "sleep", "10"],
                          timeout=60).returncode == 124


# -- SIGPIPE on stderr (coreutils tests/timeout/timeout.sh, newer versions) ----------------------

def test_verbose_to_a_broken_stderr_keeps_the_status() -> None:
    """coreutils tests/timeout (a closed pipe on stderr under -v) and quiesce issue #10:
    no BrokenPipeError, the status is still 124."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        result = subprocess.run([*QUIESCE, "-v", "--timeout", ".2", "--", "sleep", "10"],
                                stderr=write_end, timeout=60)
    finally:
        os.close(write_end)
    assert result.returncode == 124


def test_verbose_to_a_closed_stderr_keeps_the_status() -> None:
    """quiesce issue #10: stderr closed altogether (``2>&-``)."""
    result = subprocess.run(["sh", "-c", f"exec {' '.join(QUIESCE)} -v -- sh -c 'exit 3' 2>&-"],
                            timeout=60)
    assert result.returncode == 3


if sys.platform != "linux":  # pragma: no cover
    pytestmark = pytest.mark.skip(reason="checked on Linux")
