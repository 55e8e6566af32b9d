"""`quiesce run`: what tests/test_supervise.py leaves unproven.

- Reaping is prompt: every zombie is sampled continuously and none may
  last 250 ms. A single look after the storm (as test_supervise does)
  would also pass a reaper on a 1 s timer; the negative control runs
  exactly such a reaper and must fail the same check.
- A leftover is gone at the very moment `quiesce run` exits, not merely
  signalled: one that takes 0.8 s to clean up is waited for, one that
  ignores SIGTERM is killed after the grace. The negative control (no
  supervisor) shows the check sees a survivor.
- A *stopped* leftover acts on SIGTERM only once continued, so the stop
  signal is followed by SIGCONT (as systemd does); without it, it would
  live until SIGKILL after the whole grace.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from procs import alive, cmdline, seconds_until_gone, wait_for

PROGRAMS = Path(__file__).parent / "programs"
QUIESCE_RUN = [sys.executable, "-m", "quiesce", "run"]
# 100 orphans exiting 10 ms apart (over 1 s, a whole period of a 1 s timer); command ends at 1.6 s
STORM = [sys.executable, str(PROGRAMS / "cli_orphan_storm.py"), "100", "0.01", "1.6"]
MARGIN = 8.0  # seconds of slack for a loaded CI machine
PROMPT = 0.25  # the longest a zombie may wait to be reaped, with room for a loaded CI machine


def watch_zombies(pid: int, done: Callable[[], bool]) -> tuple[float, int]:
    """Sample ``pid``'s children until ``done()``.

    Returns the longest time any one child was seen as a zombie, and how
    many distinct children were seen at all (proving the orphans were
    re-parented to ``pid`` where the sampling could see them).
    """
    first: dict[int, float] = {}
    last: dict[int, float] = {}
    seen: set[int] = set()
    deadline = time.monotonic() + 30
    while not done() and time.monotonic() < deadline:
        now = time.monotonic()
        try:
            children = psutil.Process(pid).children()
        except psutil.Error:
            break
        for child in children:
            seen.add(child.pid)
            try:
                if child.status() == psutil.STATUS_ZOMBIE:
                    first.setdefault(child.pid, now)
                    last[child.pid] = now
            except psutil.Error:
                continue  # reaped while we looked
    longest = max((last[p] - first[p] for p in first), default=0.0)
    return longest, len(seen)


def storm_under(supervisor: list[str]) -> tuple[float, int, int]:
    proc = subprocess.Popen([*supervisor, *STORM])
    try:
        longest, seen = watch_zombies(proc.pid, lambda: proc.poll() is not None)
        return longest, seen, proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_every_zombie_is_reaped_within_milliseconds() -> None:
    longest, seen, status = storm_under([*QUIESCE_RUN, "--"])
    assert status == 0
    assert seen >= 90, "the orphans were not re-parented to quiesce run"
    assert longest < PROMPT, f"a zombie waited {longest:.3f} s to be reaped"


def test_negative_control_a_reaper_on_a_1s_timer_fails_the_check() -> None:
    longest, seen, status = storm_under([sys.executable, str(PROGRAMS / "cli_slow_reaper.py")])
    assert status == 0
    assert seen >= 90
    assert longest > 2 * PROMPT, f"only {longest:.3f} s: the check cannot tell a timer"


def _start_leftover(supervisor: list[str], mode: str, tmp_path: Path) -> tuple[int, float, int]:
    """Run cli_leftover.py under ``supervisor``; return its status, the time taken and
    the leftover's PID, checking the leftover at the instant the supervisor was reaped."""
    pidfile = tmp_path / "leftover.pid"
    started = time.monotonic()
    status = subprocess.run([*supervisor, sys.executable, str(PROGRAMS / "cli_leftover.py"),
                             mode, str(pidfile), str(tmp_path / "marker")], timeout=30).returncode
    return status, time.monotonic() - started, int(pidfile.read_text())


@pytest.mark.parametrize(("mode", "grace"), [("slow", 5.0), ("ignore", 1.0)])
def test_a_leftover_is_gone_when_quiesce_run_exits(mode: str, grace: float,
                                                   tmp_path: Path) -> None:
    status, took, leftover = _start_leftover([*QUIESCE_RUN, "--grace", str(grace), "--"], mode,
                                             tmp_path)
    gone = not alive(leftover)
    assert status == 7  # the command's own status, not the leftover's
    assert gone, f"quiesce run exited while leftover {leftover} ({mode}) still ran"
    if mode == "slow":
        assert (tmp_path / "marker").read_text() == "cleaned\n", "its cleanup was cut short"
        assert took < grace, "a leftover that ended on SIGTERM made quiesce wait the whole grace"
    else:
        assert took >= grace, "SIGKILL came before the grace was over"


def test_negative_control_without_quiesce_the_leftover_survives(tmp_path: Path) -> None:
    status, _, leftover = _start_leftover([], "slow", tmp_path)
    try:
        assert status == 7
        assert alive(leftover), "the check above cannot see a survivor"
    finally:
        try:
            psutil.Process(leftover).kill()  # by PID, create-time checked: ours
        except psutil.NoSuchProcess:
            pass
        assert seconds_until_gone([leftover])[1] == []


def test_a_stopped_leftover_ends_on_the_stop_signal() -> None:
    grace = 3.0
    started = time.monotonic()
    result = subprocess.run([*QUIESCE_RUN, "--grace", str(grace), "--", "bash", "-c",
                             "setsid sleep 60 & p=$!; "  # stopped once it has escaped, as sleep
                             "until [ \"$(cat /proc/$p/comm)\" = sleep ]; do sleep 0.01; done; "
                             "kill -STOP $p"], timeout=30)
    assert result.returncode == 0
    assert time.monotonic() - started < grace, "the stopped leftover waited for SIGKILL"


# -- issue #10: what users of tini, dumb-init and GNU timeout rely on ---------------------------

def test_sigkill_of_the_supervisor_ends_the_whole_tree(tmp_path: Path) -> None:
    """The command gets the stop signal at once (PR_SET_PDEATHSIG, as under GNU timeout);
    a leftover that ignores it is SIGKILLed after the grace by the watcher."""
    marker, leftover_pid = tmp_path / "term", tmp_path / "leftover"
    script = (
        "import os, signal, subprocess, sys, time\n"
        "def term(*a):\n"
        f"    open({str(marker)!r} + '.tmp', 'w').write(str(time.monotonic()))\n"
        f"    os.replace({str(marker)!r} + '.tmp', {str(marker)!r}); sys.exit(0)\n"
        "signal.signal(signal.SIGTERM, term)\n"
        "subprocess.Popen(['setsid', 'sh', '-c', \"trap '' TERM; echo $$ > $0.tmp; \"\n"
        f"                  \"mv $0.tmp $0; sleep 60 & wait\", {str(leftover_pid)!r}])\n"
        f"while not os.path.exists({str(leftover_pid)!r}): time.sleep(0.01)\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n")
    grace = 2.0
    proc = subprocess.Popen([*QUIESCE_RUN, "-k", str(grace), "--", sys.executable, "-c", script],
                            stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
    proc.stdout.close()
    leftover = int(leftover_pid.read_text())
    killed = time.monotonic()
    proc.kill()
    proc.wait()
    deadline = killed + grace + MARGIN
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert marker.exists(), "the command never got the stop signal"
    assert float(marker.read_text()) - killed < grace / 2, "the stop signal was late"
    left = [leftover]
    while left and time.monotonic() < deadline:
        left = [pid for pid in left if alive(pid)]
        time.sleep(0.01)
    gone = time.monotonic() - killed
    assert left == [], "the leftover survived the supervisor's SIGKILL"
    assert gone >= grace - 0.1, f"the leftover was SIGKILLed after {gone:.2f} s, before the grace"


def test_a_late_signal_does_not_replace_the_status() -> None:
    """A signal flood that outlasts the command: the status stays the command's own."""
    import threading

    proc = subprocess.Popen([*QUIESCE_RUN, "--", "sh", "-c",
                             "trap '' HUP TERM; echo armed; sleep 0.3; exit 3"],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline() == "armed\n"
    stop = threading.Event()

    def flood() -> None:
        while not stop.is_set() and proc.poll() is None:
            try:
                proc.send_signal(signal.SIGHUP)
            except ProcessLookupError:
                return
            time.sleep(0.001)

    sender = threading.Thread(target=flood, daemon=True)
    sender.start()
    try:
        assert proc.wait(30) == 3
    finally:
        stop.set()
        sender.join()
        proc.stdout.close()


@pytest.mark.parametrize("sig", [signal.SIGILL, signal.SIGTRAP, signal.SIGABRT, signal.SIGBUS,
                                 signal.SIGFPE, signal.SIGSEGV, signal.SIGALRM, signal.SIGXCPU,
                                 signal.SIGVTALRM, signal.SIGPROF, signal.SIGIO, signal.SIGPWR,
                                 signal.SIGSYS, signal.SIGPIPE, signal.SIGURG, signal.SIGXFSZ,
                                 signal.SIGWINCH])
def test_no_signal_kills_the_supervisor_first(sig: signal.Signals) -> None:
    """The 14 signals that used to kill the supervisor (orphaning the tree) and the
    5 not forwarded: each reaches the command, which dies of it: 128+N."""
    proc = subprocess.Popen([*QUIESCE_RUN, "-v", "--", "sleep", "30"],
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        assert "started" in line, line
        command = int(line.split(" as PID ")[1].split()[0])
        # "started" comes once the exec succeeded: `sleep` runs, no Python handler of ours
        wait_for(lambda: cmdline(command) == ["sleep", "30"], "`sleep` to exec")
        proc.send_signal(sig)
        expected = 0 if sig in (signal.SIGURG, signal.SIGWINCH) else 128 + sig
        if expected == 0:  # ignored by default: the command lives on; end it
            assert f"forwarded {sig.name}" in proc.stderr.readline()
            proc.send_signal(signal.SIGTERM)
            expected = 128 + signal.SIGTERM
        assert proc.wait(20) == expected
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert proc.stderr is not None
        proc.stderr.close()


def test_foreground_keeps_the_command_in_our_group() -> None:
    """--foreground (GNU timeout): no process group of its own."""
    result = subprocess.run([*QUIESCE_RUN, "--foreground", "--", "sh", "-c",
                             "ps -o pgid= -p $$; ps -o pgid= -p $PPID"],
                            capture_output=True, text=True, timeout=30)
    mine, supervisor = result.stdout.split()
    assert mine == supervisor
    result = subprocess.run([*QUIESCE_RUN, "--", "sh", "-c",
                             "ps -o pgid= -p $$; ps -o pgid= -p $PPID"],
                            capture_output=True, text=True, timeout=30)
    mine, supervisor = result.stdout.split()
    assert mine != supervisor  # negative control: the default is a group of its own


@pytest.mark.parametrize("spelling", ["USR1", "SIGUSR1", "usr1", "10"])
def test_stop_signal_names_and_numbers(spelling: str) -> None:
    result = subprocess.run([*QUIESCE_RUN, "-s", spelling, "--timeout", "0.2", "--",
                             "sleep", "10"], timeout=30)
    assert result.returncode == 124
    result = subprocess.run([*QUIESCE_RUN, "--preserve-status", "-s", spelling,
                             "--timeout", "0.2", "--", "sleep", "10"], timeout=30)
    assert result.returncode == 128 + signal.SIGUSR1


# -- start-up: the CLI imports only what it uses (bench/bench_startup.py measures it) ------

HEAVY = ["psutil", "subprocess", "argparse", "re", "enum", "ctypes", "typing", "logging",
         "threading", "dataclasses", "quiesce._scope", "quiesce._pools", "quiesce._core",
         "quiesce._proc._proctree"]


def _modules_after(code: str) -> set[str]:
    result = subprocess.run([sys.executable, "-c", code + "; import sys; print(*sys.modules)"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    return set(result.stdout.split())


def test_quiesce_run_imports_nothing_heavy() -> None:
    """The run path of `quiesce run -- true`; its start-up budget is 1.5x `python -c pass`."""
    loaded = _modules_after("from quiesce._cli._commandline import run_main; "
                            "assert run_main(['--', 'true']) == 0")
    assert "quiesce._cli._supervise" in loaded  # the check sees what was imported
    assert not [name for name in HEAVY if name in loaded]


def test_import_quiesce_is_lazy_and_complete() -> None:
    loaded = _modules_after("import quiesce")
    assert not [name for name in HEAVY if name in loaded]
    loaded = _modules_after("from quiesce import *; Scope, StopToken, run_command, ThreadPool")
    assert "quiesce._scope._scope" in loaded  # negative control: names do load their modules
    import quiesce

    assert set(quiesce.__all__) == set(quiesce._LAZY), "add a public name in both places"
    assert set(quiesce.__all__) <= set(dir(quiesce))
    for name in quiesce.__all__:
        assert getattr(quiesce, name) is not None
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        quiesce.nope  # noqa: B018


# -- the option parser (GNU getopt style, as tini, dumb-init and timeout) ------------------

@pytest.mark.parametrize(("argv", "options", "command"), [
    (["-vc", "--", "x"], {"--verbose": [("-v", "")], "--single-child": [("-c", "")]}, ["x"]),
    (["-s0", "-k1", "x", "-v"], {"--signal": [("-s", "0")], "--kill-after": [("-k", "1")]},
     ["x", "-v"]),
    (["--signal=INT", "--grace", "2", "x"],
     {"--signal": [("--signal", "INT")], "--kill-after": [("--grace", "2")]}, ["x"]),
    (["--fore", "--pres", "x"], {"--foreground": [("--fore", "")],
                                 "--preserve-status": [("--pres", "")]}, ["x"]),
    (["-r", "1:2", "-r3:4", "x"], {"--rewrite": [("-r", "1:2"), ("-r", "3:4")]}, ["x"]),
    (["-", "x"], {}, ["-", "x"]),
    ([], {}, []),
])
def test_parse_options(argv: list[str], options: dict[str, list[tuple[str, str]]],
                       command: list[str]) -> None:
    from quiesce._cli._commandline import RUN_OPTIONS, parse_options

    assert parse_options(RUN_OPTIONS, argv) == (options, command)


@pytest.mark.parametrize(("argv", "message"), [
    (["--yolo"], "unrecognized option '--yolo'"),
    (["-z"], "unrecognized option '-z'"),
    (["--p"], "option '--p' is ambiguous"),
    (["-s"], "-s: needs a value (SIG)"),
    (["--timeout"], "--timeout: needs a value (S)"),
    (["--verbose=yes"], "--verbose: takes no value"),
])
def test_parse_options_errors(argv: list[str], message: str) -> None:
    from quiesce._cli._commandline import RUN_OPTIONS, UsageError, parse_options

    with pytest.raises(UsageError, match=f"^{message}$".replace("(", r"\(").replace(")", r"\)")):
        parse_options(RUN_OPTIONS, argv)


def test_a_tree_that_keeps_forking_is_ended(tmp_path: Path) -> None:
    """Leftovers that ignore TERM and keep forking: SIGKILL sweeps repeat until none is left
    (the leak fixture fails the test if one survives). The command exits once all three
    forkers have forked (each touches a file then); they fork every 10 ms."""
    script = ("trap '' TERM; for i in 1 2 3; do ( trap '' TERM; while true; do "
              f"( trap '' TERM; sleep 30 ) & : > {tmp_path}/$i; sleep 0.01; done ) & done; "
              f"until [ -e {tmp_path}/1 ] && [ -e {tmp_path}/2 ] && [ -e {tmp_path}/3 ]; do "
              "sleep 0.01; done; exit 3")
    started = time.monotonic()
    result = subprocess.run([*QUIESCE_RUN, "-k", "0.5", "--", "bash", "-c", script], timeout=60)
    assert result.returncode == 3
    assert time.monotonic() - started < 0.5 + MARGIN
