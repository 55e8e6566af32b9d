"""`quiesce run --exit-with-main`: an unchanged Python job ends when its main code ends."""

from __future__ import annotations

import dataclasses
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from quiesce._cli._exit_with_main import agent_command

from procs import alive

PROGRAMS = Path(__file__).parent / "programs"
GRACE, KILL_AFTER = 0.5, 1.0  # --exit-with-main=GRACE, and the run's --grace (stop -> SIGKILL)
BOUND = GRACE + KILL_AFTER + 8  # the loose margin of the other CLI tests: a loaded machine
PROMPT = 10.0  # "at once": far below the 30 s grace these runs are given


@dataclasses.dataclass
class Ended:
    status: int
    stdout: str
    stderr: str
    seconds: float


def run(program: str, *args: str, grace: float = GRACE, options: tuple[str, ...] = (),
        cwd: Path | None = None, env: dict[str, str] | None = None) -> Ended:
    target = [program] if program.startswith("-") else [str(PROGRAMS / program)]
    argv = [sys.executable, "-m", "quiesce", "run", "--grace", str(KILL_AFTER), *options,
            f"--exit-with-main={grace}", "--", sys.executable, *target, *args]
    started = time.monotonic()
    result = subprocess.run(argv, capture_output=True, text=True, timeout=40, cwd=cwd,
                            env=None if env is None else {**os.environ, **env})
    return Ended(result.returncode, result.stdout, result.stderr, time.monotonic() - started)


def pids_from(stdout: str, prefix: str) -> list[int]:
    line = next(line for line in stdout.splitlines() if line.startswith(prefix + " "))
    return [int(word) for word in line.split()[1:]]


# -- the seed's three stuck jobs, unchanged ---------------------------------------------------
@pytest.mark.parametrize(("program", "args", "culprit"), [
    ("seed_process.py", (), "multiprocessing child 'Process-1', target __main__.work"),
    ("seed_thread.py", (), "thread 'poller'"),
    ("seed_pool.py", ("futures",), "thread 'ThreadPoolExecutor-0_0'"),
])
def test_the_seeds_stuck_jobs_end_with_mains_status_and_name_the_culprit(
        program: str, args: tuple[str, ...], culprit: str) -> None:
    ended = run(program, *args)
    assert ended.status == 0, ended.stderr
    assert "main returns" in ended.stdout
    assert GRACE <= ended.seconds < BOUND  # the grace was given, and the bound holds
    report = ended.stderr
    assert re.search(r"the main code of process \d+ ended \d+\.\d s ago, but the process "
                     r"still runs\. Ending what keeps it alive:\n", report)
    assert culprit in report and "end of report" in report
    if program != "seed_thread.py":  # Stopped or SIGTERM ended it: the interpreter's own exit
        assert "still running" not in report and "did not exit by itself" not in report
        assert "Exception in thread" not in report  # a thread ending by our Stopped is quiet
    if program == "seed_process.py":
        (child,) = pids_from(ended.stdout, "child")
        assert not alive(child)
        assert "child processes: 1" in report and f"PID {child}:" in report
        assert "sending SIGTERM to 1 process(es)" in report
        assert "start method fork\n      its Python stack:" in report  # asked of the child
        assert "seed_process.py\", line 12 in work" in report
    else:
        assert "non-daemon threads: 1" in report and "raising Stopped in 1 thread(s)" in report
        assert ("in work" if program == "seed_thread.py" else "in never_returns") in report


@pytest.mark.parametrize(("how", "culprit"), [
    ("spawn", "multiprocessing child 'stuck-spawn', target __main__.work, start method spawn"),
    ("forkserver", "multiprocessing child 'stuck-forkserver', target __main__.work, "
                   "start method forkserver"),
    ("process-pool", "multiprocessing child 'ForkProcess-1', target "
                     "concurrent.futures.process._process_worker"),
])
def test_children_of_every_start_method_and_process_pool_workers_end(
        how: str, culprit: str, tmp_path: Path) -> None:
    ended = run("exit_children.py", how, str(tmp_path))
    assert ended.status == 0, ended.stderr
    assert ended.seconds < BOUND
    (child,) = pids_from(ended.stdout, "child")
    assert not alive(child)
    assert f"PID {child}: {culprit}" in ended.stderr
    assert "did not exit by itself" not in ended.stderr  # SIGTERM was enough
    # The start method's helpers (forkserver, resource tracker) end by themselves: never
    # reported, never signalled.
    assert "child processes: 1\n" in ended.stderr and "resource_tracker" not in ended.stderr


@pytest.mark.slow
@pytest.mark.parametrize(("program", "args"), [
    ("seed_process.py", ()), ("seed_thread.py", ()), ("seed_pool.py", ("futures",))])
def test_without_the_option_the_same_jobs_hang(program: str, args: tuple[str, ...]) -> None:
    """Negative control: the programs above really do hang, so ending is our doing."""
    proc = subprocess.Popen([sys.executable, "-m", "quiesce", "run", "--grace", "1", "--",
                             sys.executable, str(PROGRAMS / program), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        lines = iter(proc.stdout.readline, "")
        assert "main returns\n" in lines  # consumes up to the handshake
        with pytest.raises(subprocess.TimeoutExpired):
            proc.wait(GRACE + KILL_AFTER + 0.5)
    finally:
        proc.send_signal(signal.SIGTERM)  # forwarded; the supervisor ends the rest
        proc.wait(30)
        if proc.stdout is not None:
            proc.stdout.close()


def test_a_multiprocessing_thread_pool_needs_nothing_ended() -> None:
    """multiprocessing.pool.ThreadPool's workers are daemon threads: exit is not held up."""
    ended = run("seed_pool.py", "multiprocessing", grace=30)
    assert (ended.status, ended.stdout, ended.stderr) == (0, "main returns\n", "")
    assert ended.seconds < PROMPT


# -- how main ends decides the status ---------------------------------------------------------
def test_main_raises_the_traceback_is_pythons_and_the_whole_tree_ends() -> None:
    ended = run("exit_endings.py", "raise", "tree")
    assert ended.status == 1
    assert ended.seconds < BOUND
    script = PROGRAMS / "exit_endings.py"
    traceback = ended.stderr.split("quiesce run --exit-with-main:")[0]
    assert traceback.startswith(f'Traceback (most recent call last):\n  File "{script}", line')
    assert traceback.endswith("ValueError: boom\n") and traceback.count("File ") == 1
    plain, escaper, grandparent, grandchild = pids_from(ended.stdout, "pids")
    for pid in (plain, escaper, grandparent, grandchild):
        assert not alive(pid), pid
    assert "child processes: 4" in ended.stderr
    assert "multiprocessing child 'grandparent', target __main__.grandparent" in ended.stderr
    assert "sleep 1001" in ended.stderr  # the setsid escaper, re-parented to the supervisor
    # The grandparent ignores SIGTERM, and so does its grandchild (SIG_IGN survives exec).
    assert f"SIGKILL to PID(s) {grandparent}, {grandchild}\n" in ended.stderr
    assert ended.stdout.endswith("main ends by raise\natexit ran\n")


def test_sys_exit_code_is_kept_even_with_a_thread_stuck_in_a_c_call() -> None:
    ended = run("exit_endings.py", "exit3", "c-call")
    assert ended.status == 3
    assert ended.seconds < BOUND
    assert "thread 'in-c-call'" in ended.stderr
    assert "thread(s) 'in-c-call' still running (blocked in a C call?)" in ended.stderr
    # The forced exit still ran atexit and flushed what main printed without flushing.
    assert ended.stdout == "main ends by exit3\natexit ran\n"


@pytest.mark.parametrize("how", ["raise", "exit-text", "interrupt", "exit3"])
def test_with_nothing_left_the_ending_is_exactly_pythons(how: str) -> None:
    """Same stdout, stderr (tracebacks included) and status as the plain interpreter."""
    plain = subprocess.run([sys.executable, str(PROGRAMS / "exit_endings.py"), how, "nothing"],
                           capture_output=True, text=True, timeout=30)
    ended = run("exit_endings.py", how, "nothing", grace=30)
    status = 128 + signal.SIGINT if plain.returncode == -signal.SIGINT else plain.returncode
    assert (ended.status, ended.stdout, ended.stderr) == (status, plain.stdout, plain.stderr)
    assert ended.status == {"raise": 1, "exit-text": 1, "interrupt": 130, "exit3": 3}[how]
    assert ended.seconds < PROMPT


@pytest.mark.parametrize("target", [["exit_endings.py", "raise", "nothing"],
                                    ["-m", "exit_endings", "raise", "nothing"],
                                    ["missing.py"], ["-m", "missing_module"]])
def test_relative_paths_modules_and_missing_files_as_python_reports_them(
        target: list[str]) -> None:
    plain = subprocess.run([sys.executable, *target], capture_output=True, text=True,
                           timeout=30, cwd=PROGRAMS)
    ended = subprocess.run([sys.executable, "-m", "quiesce", "run", "--exit-with-main", "--",
                            sys.executable, *target], capture_output=True, text=True,
                           timeout=30, cwd=PROGRAMS)
    assert (ended.returncode, ended.stdout, ended.stderr) == (
        plain.returncode, plain.stdout, plain.stderr)


def test_a_program_that_ends_normally_ends_at_once_and_finalizes_as_usual(
        tmp_path: Path) -> None:
    output = tmp_path / "out.txt"
    ended = run("exit_endings.py", "return", "nothing", grace=30,
                env={"OUTPUT_FILE": str(output)})
    assert (ended.status, ended.stdout, ended.stderr) == (
        0, "main ends by return\natexit ran\n", "")
    assert ended.seconds < PROMPT  # no report and no wait for the 30 s grace
    # A file left open is flushed by the interpreter's finalization: os._exit would lose it.
    assert output.read_text() == "written at exit"


def test_module_mode_prints_the_traceback_from_the_module() -> None:
    ended = run("-m", "exit_endings", "raise", "nothing", grace=30, cwd=PROGRAMS)
    assert ended.status == 1
    assert ended.stderr.startswith("Traceback (most recent call last):\n  File \"")
    assert "exit_endings.py\", line" in ended.stderr and "ValueError: boom" in ended.stderr
    assert "quiesce run --exit-with-main" not in ended.stderr  # nothing had to be ended
    assert ended.seconds < PROMPT


# -- programs that use quiesce stop cooperatively first -----------------------------------------
def test_a_program_using_quiesce_stops_cooperatively_before_any_grace() -> None:
    ended = run("exit_quiesce_user.py", grace=30)
    assert ended.status == 0, ended.stderr
    assert "stopped cooperatively: process" in ended.stdout
    assert "stopped cooperatively: thread" in ended.stdout
    assert ended.stderr == ""  # no report, and the scope's Stopped ended its thread quietly
    assert ended.seconds < PROMPT


# -- the rest of quiesce run still holds --------------------------------------------------------
def test_the_timeout_still_applies() -> None:
    ended = run("seed_thread.py", grace=30, options=("--timeout", "1"))
    assert ended.status == 124
    assert ended.seconds < 1 + BOUND


def test_a_stop_signal_during_the_grace_is_still_forwarded() -> None:
    proc = subprocess.Popen([sys.executable, "-m", "quiesce", "run", "--grace", "1",
                             "--exit-with-main=30", "--", sys.executable,
                             str(PROGRAMS / "seed_process.py")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        (child,) = pids_from(proc.stdout.readline(), "child")
        assert proc.stdout.readline() == "main returns\n"
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(BOUND) == 128 + signal.SIGTERM
        assert time.monotonic() - started < BOUND
        assert not alive(child)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def test_the_default_grace_is_the_runs_grace_and_signal_is_passed_on(tmp_path: Path) -> None:
    argv = agent_command(["python3", "-u", "job.py", "--x"], grace=2.5, kill_after=4.0,
                         stop_signal=signal.SIGINT)
    assert argv[:2] == ["python3", "-u"] and argv[2].endswith("_exit_agent.py")
    assert argv[3:] == ["--grace", "2.5", "--kill-after", "4.0", "--signal", "2", "job.py", "--x"]
    script = tmp_path / "show.py"
    script.write_text("import sys\nprint(sys.orig_argv[2:9], sys.argv)\n")
    result = subprocess.run([sys.executable, "-m", "quiesce", "run", "--grace", "3",
                             "--signal", "HUP", "--exit-with-main", "--", sys.executable,
                             str(script), "a"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout == (f"['--grace', '3.0', '--kill-after', '3.0', '--signal', '1', "
                             f"'{script}'] ['{script}', 'a']\n")


@pytest.mark.parametrize(("args", "message"), [
    (["--exit-with-main", "--", "node", "app.js"], "must be a Python interpreter"),
    (["--exit-with-main=soon", "--", "python3", "x.py"], "invalid duration 'soon'"),
    (["--exit-with-main", "--", "python3"], "give the script"),
])
def test_bad_usage_exits_125_naming_the_problem(args: list[str], message: str) -> None:
    result = subprocess.run([sys.executable, "-m", "quiesce", "run", *args],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 125 and message in result.stderr
    assert "--exit-with-main" in result.stderr
