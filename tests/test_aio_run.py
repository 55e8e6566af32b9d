"""quiesce.aio.run: real signals to real asyncio programs (tests/programs/aio_main.py)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import quiesce
import quiesce.aio

PROGRAM = Path(__file__).parent / "programs" / "aio_main.py"
MARGIN = 8.0


def start(mode: str, directory: Path, stderr: Path | None = None) -> subprocess.Popen[str]:
    with open(stderr or os.devnull, "w") as err:
        return subprocess.Popen([sys.executable, str(PROGRAM), mode, str(directory)],
                                stdout=subprocess.PIPE, stderr=err, text=True)


def signal_when_ready(proc: subprocess.Popen[str], *signals: signal.Signals,
                      patience: float = 30.0) -> tuple[int, float]:
    """Wait for 'ready', send ``signals`` 0.3 s apart; (exit status, seconds after the first)."""
    assert proc.stdout is not None
    try:
        assert proc.stdout.readline().strip() == "ready"
        sent = time.monotonic()
        for i, sig in enumerate(signals):
            if i:
                time.sleep(0.3)
            proc.send_signal(sig)
        code = proc.wait(patience)
        return code, time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("mode", ["workers", "uvloop"])
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_cancels_main_runs_every_finally_and_kills_by_that_signal(
        mode: str, sig: signal.Signals, tmp_path: Path) -> None:
    if mode == "uvloop":
        pytest.importorskip("uvloop")
    code, took = signal_when_ready(start(mode, tmp_path), sig)
    assert code == -sig, f"exit status {code}, expected death by {sig.name}"
    found = {p.name: p.read_text().strip() for p in tmp_path.iterdir()}
    assert found == {"main": "main finally", "task": "task finally",
                     "thread": "thread finally", "process": "process finally",
                     "popen": "trapped"}
    assert took < 1.0 + 1.0 + MARGIN


def test_shell_sees_143(tmp_path: Path) -> None:
    out = tmp_path / "stdout"
    script = (f"{sys.executable} {PROGRAM} workers {tmp_path} > {out} & pid=$!; "
              f"for i in $(seq 200); do grep -q ready {out} && break; sleep 0.05; done; "
              "kill -TERM $pid; wait $pid; echo $?")
    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=40)
    assert result.stdout.strip().splitlines()[-1] == "143"


@pytest.mark.parametrize("mode", ["stubborn", "stubborn-task"])
def test_a_second_signal_skips_the_grace(mode: str, tmp_path: Path) -> None:
    """grace is 30 s; a task swallows cancellation (and a process ignores SIGTERM)."""
    code, took = signal_when_ready(start(mode, tmp_path), signal.SIGTERM, signal.SIGTERM)
    assert code == -signal.SIGTERM
    assert took < MARGIN  # far below the 30 s grace


@pytest.mark.parametrize("mode", ["stubborn", "stubborn-task"])
def test_negative_control_one_signal_waits_for_the_grace(mode: str, tmp_path: Path) -> None:
    proc = start(mode, tmp_path)
    assert proc.stdout is not None
    try:
        assert proc.stdout.readline().strip() == "ready"
        proc.send_signal(signal.SIGTERM)
        with pytest.raises(subprocess.TimeoutExpired):
            proc.wait(2.0)
    finally:
        proc.kill()
        proc.wait()


def test_stuck_to_thread_and_a_task_outside_every_scope_do_not_hold_the_exit(
        tmp_path: Path) -> None:
    stderr = tmp_path.parent / f"{tmp_path.name}.stderr"
    code, took = signal_when_ready(start("stuck", tmp_path, stderr), signal.SIGTERM)
    assert code == -signal.SIGTERM
    assert took < 1.0 + 1.0 + 1.0 + MARGIN  # the scope, the leftover tasks, the executor
    assert "abandoned" in stderr.read_text()


@pytest.mark.parametrize(("mode", "expected"), [("return-0", 0), ("return-7", 7), ("raise", 1)])
def test_exit_status_and_a_prompt_interpreter_exit(mode: str, expected: int,
                                                   tmp_path: Path) -> None:
    started = time.monotonic()
    proc = subprocess.run([sys.executable, str(PROGRAM), mode, str(tmp_path)],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == expected
    assert time.monotonic() - started < 5.0  # nothing left to join at exit
    if mode == "raise":
        assert "ValueError: main failed on purpose" in proc.stderr


def test_in_process_exit_codes_and_restored_handlers() -> None:
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

    async def five() -> int:
        # the default executor is a quiesce.ThreadPool: each call has its own task token
        token = await asyncio.to_thread(quiesce.current_token)
        assert token is not quiesce.current_token() and "local" in repr(token)
        return 5

    def not_async() -> int:
        return 1

    with pytest.raises(SystemExit) as caught:
        quiesce.aio.run(five)
    assert caught.value.code == 5
    with pytest.raises(SystemExit) as caught:
        quiesce.aio.run(not_async)
    assert caught.value.code == 1
    assert {s: signal.getsignal(s) for s in before} == before


def test_argument_errors() -> None:
    with pytest.raises(TypeError, match="amain must be callable"):
        quiesce.aio.run("main")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="grace"):
        quiesce.aio.run(asyncio.sleep, 0, grace=float("nan"))

    async def nested() -> None:
        with pytest.raises(RuntimeError, match="running event loop"):
            quiesce.aio.run(asyncio.sleep, 0)

    asyncio.run(nested())
    errors: list[BaseException] = []

    def elsewhere() -> None:
        try:
            quiesce.aio.run(asyncio.sleep, 0)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=elsewhere)
    thread.start()
    thread.join()
    assert isinstance(errors[0], RuntimeError) and "main thread" in str(errors[0])
