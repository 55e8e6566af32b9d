"""Yelp/dumb-init's ``tests/`` ported to ``quiesce run``, test by test.

dumb-init runs its command in a new session by default ("setsid mode") and
signals the whole group; ``quiesce run`` uses a new process group (not a
session: it keeps the terminal) and signals the group too, so dumb-init's
setsid-mode tests map to quiesce's default and its ``DUMB_INIT_SETSID=0``
tests to ``-c/--single-child``. Where quiesce deliberately differs, the test
asserts quiesce's behaviour and says so (docs/command-line.md lists them).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

import pytest
from peerkit import (
    JOB_CONTROL,
    NORMAL_SIGNALS,
    PRINT_SIGNALS,
    QUIESCE,
    alive,
    children,
    descendants,
    finish,
    kill_quietly,
    next_signal,
    print_signals,
    process_state,
    run,
    wait_until,
)

MODES = [pytest.param([], id="group"), pytest.param(["-c"], id="single-child")]


# -- tests/proxies_signals_test.py ------------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
def test_proxies_signals(mode: list[str]) -> None:
    """dumb-init tests/proxies_signals_test.py::test_proxies_signals.

    Every signal 1..31 but KILL, STOP, CHLD and the job-control three reaches
    the command, one line each, in both modes. (SIGTERM and SIGINT also start
    quiesce's stop: SIGKILL follows after the grace, here 60 s, unlike
    dumb-init, which waits for ever.)
    """
    with print_signals([*mode, "-k", "60"]) as (proc, _):
        for signum in NORMAL_SIGNALS:
            proc.send_signal(signum)
            assert next_signal(proc) == signum


def test_proxies_realtime_signals() -> None:
    """quiesce's own, after dumb-init's test above: real-time signals are forwarded too."""
    script = ("import signal, sys\n"
              "signal.signal(signal.SIGRTMIN + 3, lambda *a: sys.exit(7))\n"
              "print('ready', flush=True)\n"
              "signal.pause()\n")
    proc = subprocess.Popen([*QUIESCE, "--", sys.executable, "-c", script],
                            stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
        proc.send_signal(signal.SIGRTMIN + 3)
        assert proc.wait(20) == 7
    finally:
        finish(proc)


@pytest.mark.parametrize(("rewrite", "sequence", "expected"), [
    ({}, [15, 3, 18, 2], [15, 3, 18, 2]),
    ({15: 2}, [15, 3, 18, 2], [2, 3, 18, 2]),
    ({15: 2, 2: 15, 3: 3}, [15, 3, 18, 2], [2, 3, 18, 15]),
    ({1: 31, 31: 1}, [1, 31], [31, 1]),  # the lowest and highest
])
@pytest.mark.parametrize("mode", MODES)
def test_proxies_signals_with_rewrite(rewrite: dict[int, int], sequence: list[int],
                                      expected: list[int], mode: list[str]) -> None:
    """dumb-init tests/proxies_signals_test.py::test_proxies_signals_with_rewrite."""
    args = [arg for s, r in rewrite.items() for arg in ("-r", f"{s}:{r}")]
    with print_signals([*mode, *args, "-k", "60"]) as (proc, _):
        for send, receive in zip(sequence, expected, strict=True):
            proc.send_signal(send)
            assert next_signal(proc) == receive


def test_default_rewrites_can_be_overriden() -> None:
    """dumb-init tests/proxies_signals_test.py::
    test_default_rewrites_can_be_overriden_with_setsid_enabled.

    TTIN/TTOU/TSTP rewritten to TERM/INT/HUP reach the command as such, and
    quiesce still stops itself, then SIGCONT is forwarded.
    """
    rewrite = {signal.SIGTTIN: signal.SIGTERM, signal.SIGTTOU: signal.SIGINT,
               signal.SIGTSTP: signal.SIGHUP}
    args = [arg for s, r in rewrite.items() for arg in ("-r", f"{int(s)}:{int(r)}")]
    with print_signals([*args, "-k", "60"]) as (proc, _):
        for send, receive in rewrite.items():
            assert process_state(proc.pid) in ("running", "sleeping")
            proc.send_signal(send)
            assert next_signal(proc) == receive
            os.waitpid(proc.pid, os.WUNTRACED)
            assert process_state(proc.pid) == "stopped"
            proc.send_signal(signal.SIGCONT)
            assert next_signal(proc) == signal.SIGCONT
            assert process_state(proc.pid) in ("running", "sleeping")


@pytest.mark.parametrize("mode", MODES)
def test_ignored_signals_are_not_proxied(mode: list[str]) -> None:
    """dumb-init tests/proxies_signals_test.py::test_ignored_signals_are_not_proxied."""
    args = ["-r", "TERM:QUIT", "-r", "INT:0", "-r", "WINCH:0"]
    with print_signals([*mode, *args]) as (proc, _):
        proc.send_signal(signal.SIGTERM)
        proc.send_signal(signal.SIGINT)
        assert next_signal(proc) == signal.SIGQUIT
        proc.send_signal(signal.SIGWINCH)
        proc.send_signal(signal.SIGHUP)
        assert next_signal(proc) == signal.SIGHUP


# -- tests/shell_background_test.py -------------------------------------------------------

def test_shell_background_support_group() -> None:
    """dumb-init tests/shell_background_test.py::test_shell_background_support_setsid.

    TSTP, TTOU, TTIN: the command's group is stopped (SIGSTOP) and so is
    quiesce; SIGCONT wakes both.
    """
    with print_signals() as (proc, printer):
        for signum in sorted(JOB_CONTROL):
            assert process_state(printer) in ("running", "sleeping")
            assert process_state(proc.pid) in ("running", "sleeping")
            proc.send_signal(signum)
            wait_until(lambda: process_state(proc.pid) == process_state(printer) == "stopped")
            proc.send_signal(signal.SIGCONT)
            assert next_signal(proc) == signal.SIGCONT
            assert process_state(printer) in ("running", "sleeping")
            assert process_state(proc.pid) in ("running", "sleeping")


def test_shell_background_support_single_child() -> None:
    """dumb-init tests/shell_background_test.py::test_shell_background_support_without_setsid.

    With -c the job-control signal itself is forwarded, then quiesce stops.
    """
    with print_signals(["-c"]) as (proc, _):
        for signum in sorted(JOB_CONTROL):
            assert process_state(proc.pid) in ("running", "sleeping")
            proc.send_signal(signum)
            assert next_signal(proc) == signum
            os.waitpid(proc.pid, os.WUNTRACED)
            assert process_state(proc.pid) == "stopped"
            proc.send_signal(signal.SIGCONT)
            assert next_signal(proc) == signal.SIGCONT
            assert process_state(proc.pid) in ("running", "sleeping")


# -- tests/exit_status_test.py --------------------------------------------------------------

@pytest.mark.parametrize("code", [0, 1, 2, 32, 64, 127, 254, 255])
@pytest.mark.parametrize("mode", MODES)
def test_exit_status_regular_exit(code: int, mode: list[str]) -> None:
    """dumb-init tests/exit_status_test.py::test_exit_status_regular_exit."""
    assert run(*mode, "--", "sh", "-c", f"exit {code}").returncode == code


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT,
                                    signal.SIGKILL])
@pytest.mark.parametrize("mode", MODES)
def test_exit_status_terminated_by_signal(signum: int, mode: list[str]) -> None:
    """dumb-init tests/exit_status_test.py::test_exit_status_terminated_by_signal."""
    result = run(*mode, "--", sys.executable, "-c", f"import os; os.kill(os.getpid(), {signum})")
    assert result.returncode == 128 + signum


# -- tests/child_processes_test.py ------------------------------------------------------------

PIPELINE = "yes 'oh, hi' | tail & yes error | tail >&2"


def _spawn_and_kill_pipeline(mode: list[str]) -> set[int]:
    proc = subprocess.Popen([*QUIESCE, *mode, "--", "sh", "-c", PIPELINE],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: len([p for p in descendants(proc.pid) if alive(p)]) == 5)
        pids = descendants(proc.pid)
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
    finally:
        if proc.poll() is None:
            finish(proc, *descendants(proc.pid))
    return pids


def test_group_mode_signals_entire_group() -> None:
    """dumb-init tests/child_processes_test.py::test_setsid_signals_entire_group.

    (dumb-init counts 6 processes: itself is in its own pid tree walk; here
    quiesce's 5 descendants: sh and the two pipelines.)
    """
    pids = _spawn_and_kill_pipeline([])
    wait_until(lambda: not [p for p in pids if alive(p)])


def test_single_child_doesnt_signal_entire_group() -> None:
    """dumb-init tests/child_processes_test.py::test_no_setsid_doesnt_signal_entire_group."""
    pids = _spawn_and_kill_pipeline(["-c"])
    try:
        wait_until(lambda: len([p for p in pids if alive(p)]) == 4)
    finally:
        for pid in pids:
            kill_quietly(pid)


def _spawn_process_which_dies_with_children(mode: list[str]
                                            ) -> tuple[subprocess.Popen[bytes], int]:
    """The command starts the printer and exits once the printer is ready (its handlers
    are set) and our end of its stdin closes: not after a fixed second."""
    proc = subprocess.Popen(
        [*QUIESCE, *mode, "-k", "1", "--", "sh", "-c",
         f"{' '.join(PRINT_SIGNALS)} & read line; exit 0"], stdin=subprocess.PIPE,
        stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdin is not None
    match = re.match(rb"ready \(pid: (\d+)\)\n", proc.stdout.readline())
    assert match
    proc.stdin.close()
    return proc, int(match.group(1))


def test_all_processes_receive_term_on_exit() -> None:
    """dumb-init tests/child_processes_test.py::test_all_processes_receive_term_on_exit_if_setsid.

    Differs on purpose: dumb-init exits with the command and leaves the
    leftover running; quiesce sends it TERM, waits the grace (-k 1), SIGKILLs
    it, and only then exits with the command's status.
    """
    proc, printer = _spawn_process_which_dies_with_children([])
    try:
        assert next_signal(proc) == signal.SIGTERM
        assert proc.wait(20) == 0
        assert not alive(printer), "quiesce exited while the leftover still ran"
    finally:
        finish(proc, printer)


def test_processes_dont_receive_term_on_exit_with_single_child() -> None:
    """dumb-init tests/child_processes_test.py::
    test_processes_dont_receive_term_on_exit_if_no_setsid."""
    proc, printer = _spawn_process_which_dies_with_children(["-c"])
    try:
        assert proc.wait(20) == 0
        for signum in (1, 2, 3):
            os.kill(printer, signum)
            assert next_signal(proc) == signum
    finally:
        finish(proc, printer)


@pytest.mark.parametrize("args", [["/doesnotexist"], ["--", "/doesnotexist"],
                                  ["-c", "/doesnotexist"],
                                  ["--single-child", "--", "/doesnotexist"]])
def test_fails_nonzero_with_bad_exec(args: list[str]) -> None:
    """dumb-init tests/child_processes_test.py::test_fails_nonzero_with_bad_exec.

    quiesce says "command not found" and exits 127, as shells and GNU timeout do.
    """
    result = run(*args)
    assert result.returncode == 127
    assert "quiesce run: /doesnotexist: command not found\n" in result.stderr


# -- tests/cli_test.py -------------------------------------------------------------------------

def test_no_arguments_prints_usage() -> None:
    """dumb-init tests/cli_test.py::test_no_arguments_prints_usage (125, not 1: GNU's code)."""
    result = run()
    assert result.returncode == 125
    assert result.stderr.startswith("usage: quiesce run [OPTION]... [--] COMMAND [ARG]...\n")


def test_exits_invalid_with_invalid_args() -> None:
    """dumb-init tests/cli_test.py::test_exits_invalid_with_invalid_args."""
    result = run("--yolo", "/bin/true")
    assert result.returncode == 125
    assert "unrecognized option '--yolo'" in result.stderr


@pytest.mark.parametrize("flag", ["-h", "--help"])
def test_help_message(flag: str) -> None:
    """dumb-init tests/cli_test.py::test_help_message (on stdout, as GNU tools do)."""
    result = run(flag)
    assert result.returncode == 0
    for option in ("-c, --single-child", "-r, --rewrite S:R", "-v, --verbose", "-h, --help",
                   "-V, --version", "-s, --signal SIG", "-k, --kill-after, --grace S",
                   "--timeout S", "-e, --expect-exit CODE", "-p, --pdeathsig SIG",
                   "--preserve-status", "--foreground"):
        assert option in result.stdout


@pytest.mark.parametrize("flag", ["-V", "--version"])
def test_version_message(flag: str) -> None:
    """dumb-init tests/cli_test.py::test_version_message."""
    from quiesce import __version__

    result = run(flag)
    assert (result.returncode, result.stdout) == (0, f"quiesce {__version__}\n")


@pytest.mark.parametrize("flag", ["-v", "--verbose"])
@pytest.mark.parametrize("mode", MODES)
def test_verbose(flag: str, mode: list[str]) -> None:
    """dumb-init tests/cli_test.py::test_verbose and ::test_verbose_and_single_child."""
    result = run(flag, *mode, "echo", "oh,", "hi")
    assert result.returncode == 0
    assert result.stdout == "oh, hi\n"
    assert re.search(r"^quiesce run: started 'echo' as PID (\d+) .*\n"
                     r"quiesce run: command PID \1 ended \(exit status 0\)\n"
                     r"quiesce run: exit status 0\n$", result.stderr), result.stderr


@pytest.mark.parametrize("extra", [["-r"], ["-r", ""], ["-r", "herp"], ["-r", "herp:derp"],
                                   ["-r", "15"], ["-r", "15::12"], ["-r", "15:derp"],
                                   ["-r", "15:12", "-r"], ["-r", "15:12", "-r", "0"],
                                   ["-r", "15:12", "-r", "1:32"], ["-r", "9:1"]])
def test_rewrite_errors(extra: list[str]) -> None:
    """dumb-init tests/cli_test.py::test_rewrite_errors (quiesce: 125, naming -r)."""
    result = run(*extra, "echo", "oh,", "hi")
    assert result.returncode == 125
    assert result.stdout == ""
    assert "quiesce run: error: -r" in result.stderr


# -- tests/cwd_test.py -----------------------------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
def test_working_directories(mode: list[str]) -> None:
    """dumb-init tests/cwd_test.py::test_working_directories: the command starts in our
    working directory; quiesce itself then holds none (it moves to /)."""
    result = run(*mode, "sh", "-c", "readlink /proc/$PPID/cwd && readlink /proc/$$/cwd",
                 cwd="/tmp")
    assert (result.returncode, result.stdout) == (0, "/\n/tmp\n")


# -- tests/test-zombies ----------------------------------------------------------------------

# A middle process forks the orphan-to-be and exits; the orphan waits until it has
# been re-parented, says to whom, and exits; the command then waits for its stdin to close.
ORPHANING_COMMAND = """
import os, sys, time
if os.fork() == 0:
    middle = os.getpid()
    if os.fork() == 0:
        while os.getppid() == middle:
            time.sleep(0.001)
        print("orphan", os.getpid(), "adopted by", os.getppid(), flush=True)
    os._exit(0)
os.wait()
sys.stdin.read()
"""


def test_zombies_are_reaped() -> None:
    """dumb-init tests/test-zombies: a grandchild orphaned while running leaves no zombie.

    The orphan is adopted by quiesce (a child subreaper) and exits while the
    command still runs: quiesce reaps it then, not only at the end.
    """
    proc = subprocess.Popen([*QUIESCE, "--", sys.executable, "-c", ORPHANING_COMMAND],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdin is not None
        words = proc.stdout.readline().split()
        assert words[:1] == ["orphan"], words
        orphan, parent = int(words[1]), int(words[4])
        assert parent == proc.pid, "the orphan was not adopted by quiesce"

        # A zombie is still quiesce's child; reaped, it is gone from /proc.
        wait_until(lambda: orphan not in children(proc.pid), timeout=20,
                   message=f"orphan {orphan} was never reaped")
        assert proc.poll() is None  # the command still runs: reaped on the way, not at exit
        proc.stdin.close()
        assert proc.wait(20) == 0
    finally:
        finish(proc)
