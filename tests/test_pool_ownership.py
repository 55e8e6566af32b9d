"""Pools end with whatever owns them: a stop from above, SIGTERM under quiesce.run, exit.

A pool made in a scope body, a worker or under ``handle_signals`` belongs to
the token current where it was made; its stop must reach running tasks, and a
``with pool:`` block must not hang on SIGTERM. Negative controls show the
stdlib pool hanging where quiesce's ends.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import quiesce
from quiesce._core._context import using
from quiesce._pools._pool_base import Pool
from quiesce._scope._live_scopes import hurry_all_scopes

from pool_tasks import add, ignore_everything, ignore_token, slow, wait_for_stop
from procs import alive, seconds_until_gone, wait_for_file

MARGIN = 5.0
PROGRAMS = Path(__file__).parent / "programs"
KINDS = ["thread", "process"]


def make(kind: str, **kw: object) -> Pool:
    if kind == "thread":
        return quiesce.ThreadPool(2, **kw)  # type: ignore[arg-type]
    return quiesce.ProcessPool(2, mp_context="forkserver", **kw)  # type: ignore[arg-type]


def wait_for(path: Path, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    return path.read_text()


@pytest.mark.parametrize("kind", KINDS)
def test_a_stop_from_above_reaches_a_pool_made_in_the_scope_body(kind: str,
                                                                 tmp_path: Path) -> None:
    marker = tmp_path / "woke"
    with quiesce.Scope(grace=0.3, kill_after=0.3) as scope:
        pool = make(kind, grace=0.3, kill_after=0.3)  # not scope.thread_pool: a plain pool
        future = pool.submit(wait_for_stop, str(marker))
        while not future.running():
            time.sleep(0.01)
        scope.stop("from above")
        with pytest.raises(concurrent.futures.CancelledError):
            future.result(10)
        assert wait_for(marker).startswith("True ")  # its token stopped: it woke at once
        with pytest.raises(RuntimeError, match="stopped from above"):
            pool.submit(add, 1)
        started = time.monotonic()
        pool.shutdown(wait=True)
        assert time.monotonic() - started < 0.3 + 0.3 + MARGIN


@pytest.mark.parametrize("kind", KINDS)
def test_a_pool_made_under_a_stopped_token_takes_no_work(kind: str) -> None:
    token = quiesce.StopToken()
    token.stop("already")
    with using(token):
        pool = make(kind)  # on_stop of a stopped token runs at once: closed already
        with pytest.raises(RuntimeError, match="stopped from above"):
            pool.submit(add, 1)
        pool.stop()


@pytest.mark.parametrize("kind", KINDS)
def test_an_outer_stop_leaves_a_pool_made_outside_it_alone(kind: str) -> None:
    """Negative control for the link: only the token current at creation counts."""
    pool = make(kind, grace=0.3, kill_after=0.3)
    try:
        with quiesce.Scope() as scope:
            future = pool.submit(slow, 0.3)
            scope.stop()
        assert future.result(10) == 0.3
        assert pool.submit(add, 2).result(10) == 2
    finally:
        pool.stop()


@pytest.mark.parametrize("method", multiprocessing.get_all_start_methods())
def test_shutting_down_an_idle_process_pool_is_prompt(method: str) -> None:
    """Under fork a worker inherits its siblings' pipe ends: EOF alone never came."""
    pool = quiesce.ProcessPool(2, grace=2, kill_after=2, mp_context=method)
    assert sorted(pool.map(add, [1, 2, 3, 4])) == [1, 2, 3, 4]
    assert [f.result(20) for f in [pool.submit(slow, 0.2) for _ in range(2)]] == [0.2, 0.2]
    started = time.monotonic()
    pool.shutdown(wait=True)
    assert time.monotonic() - started < 2.0  # was grace + kill_after (4 s) per worker


def run_program(name: str, *args: str) -> subprocess.Popen[str]:
    program = subprocess.Popen([sys.executable, str(PROGRAMS / name), *args],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert program.stdout is not None
    return program


@pytest.mark.parametrize("library", ["quiesce-thread", "quiesce-process"])
def test_sigterm_under_run_ends_a_with_pool_block(library: str) -> None:
    program = run_program("pool_under_run.py", library, "forkserver")
    try:
        assert program.stdout is not None
        assert program.stdout.readline().strip() == "ready"
        started = time.monotonic()
        program.send_signal(signal.SIGTERM)
        program.wait(0.3 + 0.3 + MARGIN + 5)
        assert time.monotonic() - started < 0.3 + 0.3 + MARGIN
        assert program.returncode == -signal.SIGTERM
    finally:
        if program.poll() is None:
            program.kill()
        program.communicate()


def test_sigterm_under_run_does_not_end_a_stdlib_pool_block() -> None:
    """Negative control: the hang the test above proves quiesce pools avoid."""
    program = run_program("pool_under_run.py", "stdlib-thread", "forkserver")
    try:
        assert program.stdout is not None
        assert program.stdout.readline().strip() == "ready"
        program.send_signal(signal.SIGTERM)
        with pytest.raises(subprocess.TimeoutExpired):
            program.wait(0.3 + 0.3 + MARGIN)
    finally:
        program.kill()
        program.communicate()


def test_a_future_waited_on_in_main_lets_signal_handlers_run() -> None:
    program = run_program("pool_signal_elsewhere.py")
    out, err = program.communicate(timeout=30)
    assert program.returncode == 0, err
    kind, took = out.split()
    assert kind == "CancelledError"
    assert float(took) < MARGIN  # not the 20 s of the whole wait


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("how", ["stop", "shutdown"])
def test_a_done_callback_may_end_its_own_pool(kind: str, how: str) -> None:
    """Callbacks run on the pool's own threads (a ProcessPool's dispatcher): no deadlock."""
    pool = make(kind, grace=0.3, kill_after=0.3)
    try:
        other = pool.submit(slow, 0.5)
        returned = threading.Event()
        future = pool.submit(slow, 0.2)  # still running when the callback is added

        def end_the_pool(_: object) -> None:
            getattr(pool, how)()
            returned.set()

        future.add_done_callback(end_the_pool)
        assert not future.done()
        assert returned.wait(0.5 + MARGIN)
        assert future.result(0) == 0.2
        if how == "shutdown":
            assert other.result(10) == 0.5  # the stdlib meaning: running work finishes
        else:
            with pytest.raises(concurrent.futures.CancelledError):
                other.result(MARGIN)
    finally:
        pool.stop()


@pytest.mark.parametrize("how", ["stop", "shutdown"])
def test_a_thread_task_may_end_its_own_pool(how: str) -> None:
    """The stdlib raises 'cannot join current thread' here; the task's own thread is skipped."""
    pool = quiesce.ThreadPool(2, grace=0.3)
    try:
        other = pool.submit(slow, 0.5)
        future = pool.submit(lambda: getattr(pool, how)() or "returned")
        if how == "shutdown":
            assert future.result(0.5 + MARGIN) == "returned"
            assert other.result(10) == 0.5
        else:
            with pytest.raises(concurrent.futures.CancelledError):  # stop() cancels it too
                future.result(0.3 + MARGIN)
            assert other.cancelled()
    finally:
        pool.stop()


@pytest.mark.parametrize("method", multiprocessing.get_all_start_methods())
def test_owner_sigkilled_leaves_no_pool_worker_under_each_start_method(method: str,
                                                                     tmp_path: Path) -> None:
    program = run_program("pool_owner.py", method, str(tmp_path))
    try:
        assert program.stdout is not None
        pids = [int(p) for p in program.stdout.readline().split()]
        assert len(pids) == 2 and all(alive(p) for p in pids)
        program.send_signal(signal.SIGKILL)
        program.wait(10)
        latency, survivors = seconds_until_gone(pids)
        assert survivors == []
        assert latency < 1.0
    finally:
        if program.poll() is None:
            program.kill()
        program.communicate()


def test_a_scope_reports_how_its_pools_ended(tmp_path: Path) -> None:
    with quiesce.Scope(grace=0.3, kill_after=5, mp_context="forkserver") as scope:
        idle = scope.thread_pool(1)
        assert idle.submit(add, 1).result(10) == 1
        cooperative = scope.thread_pool(1)
        waiting = cooperative.submit(wait_for_stop, str(tmp_path / "woke"))
        stubborn = scope.process_pool(1)
        ignoring = stubborn.submit(ignore_token, str(tmp_path / "finally"),
                                   str(tmp_path / "ready"))
        for future in (waiting, ignoring):
            while not future.running():
                time.sleep(0.01)
        wait_for_file(tmp_path / "ready")  # inside its try: SIGTERM raises Stopped there
    assert [r.ended_by for r in scope.report()] == ["finished", "stopped", "terminated"]


def test_a_hurried_scope_hurries_its_pools(tmp_path: Path) -> None:
    """A second signal skips the grace: the pool's workers are killed at once, not after 10 s."""
    with quiesce.Scope(grace=5, kill_after=5, mp_context="forkserver") as scope:
        pool = scope.process_pool(1)
        pool.submit(ignore_everything, str(tmp_path / "ready"))
        wait_for_file(tmp_path / "ready")  # SIGTERM is ignored from now on
        scope.stop()
        # Deliberate: the hurry lands inside the 5 s grace, as a second signal would (the
        # hurry is sticky, so an earlier one would end the same way).
        time.sleep(0.2)
        started = time.monotonic()
        hurry_all_scopes()
    assert time.monotonic() - started < MARGIN
    assert [r.ended_by for r in scope.report()] == ["killed"]
