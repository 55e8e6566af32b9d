"""Never a hang: no thread to be had, no fd to be had, durations beyond any wait.

Each program runs under a real limit (RLIMIT_NPROC as an unprivileged
user, RLIMIT_AS, ``prlimit --nofile``) in a child process with a hard timeout: a hang
fails the test instead of the suite. Negative controls, run by hand with
PYTHONPATH at the sources before these fixes: the ladder program hung
(killed by the timeout) and the watcher program printed
``{"fired": [false, true, true]}``.
"""

from __future__ import annotations

import json
import math
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from faultkit import program

import quiesce


@pytest.mark.slow
@pytest.mark.parametrize("limit", ["nproc", "as"])
def test_scope_exit_runs_the_ladder_itself_when_no_thread_can_start(limit: str) -> None:
    done = subprocess.run([sys.executable, program("ladder_no_thread.py"), limit], cwd="/",
                          capture_output=True, text=True, timeout=40)
    assert "cannot start a thread: can't start new thread" in done.stdout, done.stdout
    assert "the thread waiting for the scope runs it" in done.stderr
    # three threads and a process stopped by their tokens, the command by SIGTERM
    assert done.stdout.splitlines()[-1] == "exited stopped stopped stopped stopped terminated"
    assert done.returncode == 0, done.stderr


def test_an_interrupted_exit_does_not_lose_the_ladder(tmp_path: Path) -> None:
    """KeyboardInterrupt in the thread running its block's ladder: the rest still runs.

    Negative control (the rest not handed to a thread): the worker was never
    killed ("ended False None").
    """
    began = tmp_path / "ladder-began"
    proc = subprocess.Popen([sys.executable, program("interrupted_exit.py"), str(began)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while not began.exists():
            assert proc.poll() is None and time.monotonic() < deadline, "the ladder never began"
            time.sleep(0.01)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    lines = out.splitlines()
    assert lines[0] == "interrupted", err
    ended, how, seconds = lines[1].split()[1:]
    assert (ended, how) == ("True", "killed"), err
    assert 1.5 <= float(seconds) < 10, "not SIGKILLed at grace + kill_after (2 s)"


@pytest.mark.skipif(shutil.which("prlimit") is None, reason="prlimit(1) is not installed")
def test_the_token_watcher_survives_running_out_of_fds() -> None:
    done = subprocess.run(["prlimit", "--nofile=64:64", sys.executable,
                           program("watcher_emfile.py")],
                          capture_output=True, text=True, timeout=40)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == {"fired": [True, True, True]}


def _off_main(fn: Callable[[], Any], limit: float = 20.0) -> Any:
    """Run ``fn`` in a thread (where waits are not sliced); its result, or raise its error."""
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["value"] = fn()
        except BaseException as exc:
            out["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(limit)
    assert not thread.is_alive(), f"{fn} hung"
    if "error" in out:
        raise out["error"]
    return out.get("value")


def _stop_soon(token: quiesce.StopToken) -> threading.Timer:
    timer = threading.Timer(0.2, token.stop)
    timer.start()
    return timer


def _wait(token: quiesce.StopToken) -> None:
    token.wait()


def test_huge_waits_off_the_main_thread_wait_instead_of_overflowing() -> None:
    token = quiesce.StopToken()
    _stop_soon(token)
    assert _off_main(lambda: token.wait(1e10)) is True
    assert _off_main(lambda: quiesce.StopToken().wait(0.01)) is False  # control: times out

    def pools() -> list[int]:
        with quiesce.ThreadPool(1, grace=1e10, kill_after=1e10, task_timeout=1e10) as tp, \
                quiesce.ProcessPool(1, grace=1e10, kill_after=1e10, task_timeout=1e10) as pp:
            return [tp.submit(abs, -1).result(1e10), pp.submit(abs, -2).result(1e10),
                    pp.submit_with(abs, -3, timeout=1e10).result(1e10)]

    assert _off_main(pools) == [1, 2, 3]
    assert _off_main(lambda: quiesce.run_command(["true"], timeout=1e10,
                                                 grace=1e10).returncode) == 0


@pytest.mark.parametrize("where", ["main", "thread"])
def test_a_scope_with_a_huge_grace_ends_its_workers_and_returns(where: str) -> None:
    def scope() -> list[str | None]:
        with quiesce.Scope(grace=1e10, kill_after=1e10) as s:
            s.thread(_wait)
            s.process(_wait)
            worker = s.thread(time.sleep, 0.05)
            assert worker.join(1e10)
            assert s.join(0.01) is False  # control: the others wait for the stop
        return sorted(str(w.ended_by) for w in s.workers)

    started = time.monotonic()
    ended = scope() if where == "main" else _off_main(scope)
    assert ended == ["finished", "stopped", "stopped"]
    assert time.monotonic() - started < 10


@pytest.mark.parametrize("bad", [math.inf, -math.inf, math.nan, -1.0])
def test_non_finite_or_negative_durations_are_rejected_naming_the_argument(bad: float) -> None:
    calls: list[tuple[str, Callable[[], object]]] = [
        ("grace", lambda: quiesce.Scope(grace=bad)),
        ("kill_after", lambda: quiesce.Scope(kill_after=bad)),
        ("timeout", lambda: quiesce.StopToken().wait(bad)),
        ("seconds", lambda: quiesce.sleep(bad)),
        ("grace", lambda: quiesce.ThreadPool(1, grace=bad)),
        ("task_timeout", lambda: quiesce.ProcessPool(1, task_timeout=bad)),
        ("timeout", lambda: quiesce.run_command(["true"], timeout=bad)),
        ("grace", lambda: quiesce.run(lambda: None, grace=bad)),
    ]
    for name, call in calls:
        with pytest.raises(ValueError, match=name):
            call()
