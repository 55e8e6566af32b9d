"""handle_signals() and quiesce.run(): real signals to real programs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import quiesce
from quiesce._core import _context

PROGRAM = Path(__file__).parent / "programs" / "run_main.py"


def start(mode: str, directory: Path, stderr: Path | None = None) -> subprocess.Popen[str]:
    with open(stderr or os.devnull, "w") as err:
        return subprocess.Popen([sys.executable, str(PROGRAM), mode, str(directory)],
                                stdout=subprocess.PIPE, stderr=err, text=True)


def wait_ready(proc: subprocess.Popen[str]) -> None:
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"


@pytest.mark.parametrize("mode", ["workers", "blocked"])
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_runs_every_finally_and_exits_by_that_signal(
        mode: str, sig: signal.Signals, tmp_path: Path) -> None:
    proc = start(mode, tmp_path)
    try:
        wait_ready(proc)
        sent = time.monotonic()
        proc.send_signal(sig)
        code = proc.wait(20)
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert code == -sig, f"exit status {code}, expected death by {sig.name}"
    found = {p.name: p.read_text().strip() for p in tmp_path.iterdir()}
    assert found == {"main": "main finally", "thread": "thread finally",
                     "process": "process finally", "popen": "trapped"}
    assert took < 1.0 + 1.0 + 8.0  # grace + kill_after + a wide margin


def test_shell_sees_128_plus_n(tmp_path: Path) -> None:
    out = tmp_path / "stdout"
    script = (f"{sys.executable} {PROGRAM} workers {tmp_path} > {out} & pid=$!; "
              f"for i in $(seq 200); do grep -q ready {out} && break; sleep 0.05; done; "
              "kill -TERM $pid; wait $pid; echo $?")
    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=40)
    assert result.stdout.strip().splitlines()[-1] == "143"


@pytest.mark.parametrize(("mode", "expected"), [("return-0", 0), ("return-7", 7),
                                               ("raise", 1)])
def test_exit_status(mode: str, expected: int, tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(PROGRAM), mode, str(tmp_path)],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == expected
    if mode == "raise":
        assert "ValueError: main failed on purpose" in proc.stderr


def test_second_signal_skips_the_grace(tmp_path: Path) -> None:
    """grace is 30 s and the worker ignores SIGTERM: only the 2nd signal ends it soon."""
    stderr = tmp_path.parent / f"{tmp_path.name}.stderr"
    proc = start("stubborn", tmp_path, stderr)
    try:
        wait_ready(proc)
        proc.send_signal(signal.SIGTERM)
        with pytest.raises(subprocess.TimeoutExpired):
            proc.wait(1.5)  # still in its 30 s grace
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(20)
        except subprocess.TimeoutExpired:
            pytest.fail(f"still running 20 s after the 2nd signal; stderr:\n{stderr.read_text()}")
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert code == -signal.SIGTERM, stderr.read_text()
    assert took < 10.0, f"the second signal took {took:.1f} s to end the program"


@pytest.fixture
def fresh_root_token() -> Iterator[None]:
    """These tests stop the test process's root token: give later tests a fresh one."""
    yield
    _context.set_root_token(quiesce.StopToken())


@pytest.mark.usefixtures("fresh_root_token")
def test_handle_signals_stops_the_root_token_and_restores_handlers() -> None:
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    with quiesce.handle_signals() as handling:
        assert signal.getsignal(signal.SIGTERM) is not before[signal.SIGTERM]
        token = quiesce.current_token()
        assert not token.stopped
        signal.raise_signal(signal.SIGTERM)
        assert token.wait(5), "the root token did not stop on SIGTERM"
        assert token.reason == "received SIGTERM"
        assert handling.received == [signal.SIGTERM]
    assert {s: signal.getsignal(s) for s in before} == before


def test_plain_call_installs_and_restore_puts_back() -> None:
    previous = signal.getsignal(signal.SIGUSR1)
    handling = quiesce.handle_signals([signal.SIGUSR1])
    try:
        assert signal.getsignal(signal.SIGUSR1) is not previous
    finally:
        handling.restore()
    assert signal.getsignal(signal.SIGUSR1) is previous


def test_off_the_main_thread_is_a_clear_runtime_error() -> None:
    errors: list[BaseException] = []

    def call() -> None:
        try:
            quiesce.handle_signals()
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=call, name="not-main")
    t.start()
    t.join(10)
    assert len(errors) == 1 and isinstance(errors[0], RuntimeError)
    assert "main thread" in str(errors[0]) and "not-main" in str(errors[0])


@pytest.mark.parametrize(("signals", "force_after", "message"), [
    (["SIGNOPE"], 1, "unknown signal name"),
    ([signal.SIGKILL], 1, "SIGKILL cannot be caught"),
    ([], 1, "at least one"),
    ([signal.SIGTERM], 0, "force_after"),
])
def test_bad_arguments(signals: list[object], force_after: int, message: str) -> None:
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises((ValueError, TypeError), match=message):
        quiesce.handle_signals(signals, force_after=force_after)
    assert signal.getsignal(signal.SIGTERM) is before


def test_run_rejects_bad_arguments() -> None:
    with pytest.raises(TypeError, match="main must be callable"):
        quiesce.run(42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="grace"):
        quiesce.run(print, grace=-1)
