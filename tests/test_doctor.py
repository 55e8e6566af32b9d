"""`quiesce doctor`: says what keeps a finished program alive."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from quiesce._cli._diagnose import agent_command

PROGRAM = Path(__file__).parent / "programs" / "hangs_after_main.py"


def doctor_report(mode: str) -> tuple[str, int]:
    """Run the doctor on a hanging program; return its first report and the exit status."""
    proc = subprocess.Popen([sys.executable, "-m", "quiesce", "doctor", "--after", "0.3",
                             "--grace", "1", "--", sys.executable, str(PROGRAM), mode],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stderr is not None
        assert proc.stdout.readline() == "main returns\n"
        lines = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            lines.append(line)
            if line.startswith("quiesce doctor: end of report") or not line:
                break
        proc.send_signal(signal.SIGTERM)  # forwarded: the program dies of it
        return "".join(lines), proc.wait(20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def test_names_the_stuck_thread_and_shows_its_stack() -> None:
    report, status = doctor_report("thread")
    assert "still runs" in report
    assert "non-daemon threads: 1" in report
    assert "thread 'stuck-poller'" in report
    assert "in poll_forever" in report and "time.sleep(0.05)" in report
    assert status == 128 + signal.SIGTERM


def test_shows_a_stdlib_pool_task_that_never_returns() -> None:
    report, status = doctor_report("pool")
    assert "thread 'ThreadPoolExecutor-" in report
    assert "in poll_forever" in report
    assert status == 128 + signal.SIGTERM


def test_lists_quiesce_pools_with_their_running_tasks() -> None:
    report, status = doctor_report("quiesce-pool")
    pools = report.split("quiesce pools with running tasks: ", 1)[1]
    assert pools.startswith("1") and "ThreadPool" in pools and "poll_forever(...)" in pools
    assert status == 128 + signal.SIGTERM


def test_shows_the_stuck_child_process_with_its_command_line() -> None:
    report, status = doctor_report("child")
    assert "non-daemon threads: 0" in report
    children = report.split("child processes: ", 1)[1].split("quiesce pools", 1)[0]
    assert "multiprocessing child" in children and "start method spawn" in children
    assert status == 128 + signal.SIGTERM


def test_a_program_that_ends_gets_no_report_and_keeps_its_status(tmp_path: Path) -> None:
    script = tmp_path / "fine.py"
    script.write_text("import sys\nprint('bye')\nsys.exit(3)\n")
    result = subprocess.run([sys.executable, "-m", "quiesce", "doctor", "--after", "0.1", "--",
                             sys.executable, str(script)], capture_output=True, text=True,
                            timeout=30)
    assert (result.returncode, result.stdout, result.stderr) == (3, "bye\n", "")


@pytest.mark.parametrize(("command", "message"), [
    (["node", "app.js"], "must be a Python interpreter"),
    (["python"], "give the script"),
    (["python", "-c", "print(1)"], "option '-c' is not supported"),
])
def test_rejects_what_it_cannot_run(command: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        agent_command(command, 1.0, 10.0)
    result = subprocess.run([sys.executable, "-m", "quiesce", "doctor", "--", *command],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 125 and message in result.stderr


def test_keeps_interpreter_flags_and_module_mode() -> None:
    argv = agent_command(["python3.11", "-u", "-X", "dev", "-m", "pkg.app", "--x"], 1.0, 2.0)
    assert argv[:3] == ["python3.11", "-u", "-X"] and argv[3] == "dev"
    assert argv[4].endswith("_diagnose_agent.py")
    assert argv[-3:] == ["-m", "pkg.app", "--x"]


def test_names_a_scope_s_worker_process_though_multiprocessing_no_longer_lists_it() -> None:
    report, _ = doctor_report("scope-child")
    children = report.split("child processes: ", 1)[1].split("quiesce pools", 1)[0]
    assert "multiprocessing child 'scope-1/poll_forever-1'" in children, children


def test_names_a_forked_multiprocessing_child_with_its_target_and_stack() -> None:
    """Issue #10: a forked child is named by its process name and target and shows its
    own Python stack, not the command line it inherited from the doctor's agent."""
    report, status = doctor_report("fork-child")
    children = report.split("child processes: ", 1)[1].split("quiesce pools", 1)[0]
    assert "multiprocessing child 'stuck-worker'" in children
    assert "target __main__.poll_forever" in children and "start method fork" in children
    entry = next(line for line in children.splitlines() if "stuck-worker" in line)
    assert "_diagnose_agent.py" not in entry, "it shows the command line inherited from the agent"
    stack = children.split("its Python stack:", 1)[1]
    assert "poll_forever" in stack and "hangs_after_main.py" in stack
    assert status == 128 + signal.SIGTERM


def test_a_spawned_child_is_named_too() -> None:
    report, _ = doctor_report("child")
    children = report.split("child processes: ", 1)[1]
    assert "target __main__.poll_forever" in children and "start method spawn" in children
