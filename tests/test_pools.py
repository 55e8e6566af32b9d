"""ThreadPool and ProcessPool: stoppable running tasks, deaths, bounded stop, no leaks."""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import quiesce
from quiesce._pools._pool_base import Pool

import pool_tasks
from pool_tasks import (
    add,
    exit_hard,
    fail,
    ignore_everything,
    ignore_token,
    kill_self,
    pid_of_worker,
    segfault,
    slow,
    wait_for_stop,
)
from procs import alive, wait_for_file

MARGIN = 8.0
KINDS = ["thread", "process"]


def make(kind: str, max_workers: int = 2, **kw: object) -> Pool:
    if kind == "thread":
        return quiesce.ThreadPool(max_workers, **kw)  # type: ignore[arg-type]
    return quiesce.ProcessPool(max_workers, mp_context="forkserver", **kw)  # type: ignore[arg-type]


@pytest.fixture(params=KINDS)
def pool(request: pytest.FixtureRequest) -> Iterator[Pool]:
    p = make(request.param, grace=0.5, kill_after=0.5)
    try:
        yield p
    finally:
        p.stop()


def wait_running(future: concurrent.futures.Future[object], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not future.running() and time.monotonic() < deadline:
        time.sleep(0.005)
    assert future.running()


# -- the Executor surface ----------------------------------------------------------------

def test_submit_map_and_errors(pool: Pool) -> None:
    assert pool.submit(add, 2, b=3).result(20) == 5
    assert list(pool.map(add, range(50), range(50))) == [2 * i for i in range(50)]
    with pytest.raises(ValueError, match="boom") as info:
        pool.submit(fail, "boom").result(20)
    if isinstance(pool, quiesce.ProcessPool):
        assert "Traceback" in str(info.value.__cause__)


def test_process_map_chunks_keep_order() -> None:
    with quiesce.ProcessPool(2, mp_context="forkserver") as pool:
        assert list(pool.map(add, range(1000), range(1000), chunksize=37)) == \
            [2 * i for i in range(1000)]
        with pytest.raises(ValueError, match="chunksize"):
            pool.map(add, [1], chunksize=0)


@pytest.mark.parametrize("kind", KINDS)
def test_shutdown_keeps_the_stdlib_meaning(kind: str) -> None:
    pool = make(kind, max_workers=1)
    running = pool.submit(slow, 0.5)
    queued = [pool.submit(slow, 0.01) for _ in range(3)]
    wait_running(running)
    pool.shutdown(wait=True, cancel_futures=True)
    assert running.result(0) == 0.5  # a running task finishes
    assert all(f.cancelled() for f in queued)
    with pytest.raises(RuntimeError, match="after shutdown"):
        pool.submit(add, 1)


# -- cancelling and timing out running tasks ------------------------------------------------------

def test_cancel_running_cooperative_task(pool: Pool, tmp_path: Path) -> None:
    marker = tmp_path / "woke"
    future = pool.submit(wait_for_stop, str(marker), str(tmp_path / "ready"))
    wait_running(future)
    wait_for_file(tmp_path / "ready")  # the task itself runs, not only its dispatch
    assert future.cancel()
    assert future.cancelled()
    with pytest.raises(concurrent.futures.CancelledError):
        future.result(0)
    deadline = time.monotonic() + MARGIN
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert marker.read_text() == "True cancelled"
    assert pool.submit(add, 1, 1).result(20) == 2  # the pool keeps serving


def test_cancel_process_task_ignoring_its_token_runs_its_finally(tmp_path: Path) -> None:
    marker = tmp_path / "finally"
    with quiesce.ProcessPool(1, grace=0.3, kill_after=5, mp_context="forkserver") as pool:
        before = pool.submit(pid_of_worker).result(20)
        future = pool.submit(ignore_token, str(marker), str(tmp_path / "ready"))
        wait_running(future)
        wait_for_file(tmp_path / "ready")  # inside its try
        assert future.cancel()
        deadline = time.monotonic() + MARGIN
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert marker.read_text() == "finally ran"  # SIGTERM after grace raised Stopped
        assert pool.submit(pid_of_worker).result(20) == before  # the worker survived


def test_cancel_process_task_ignoring_everything_kills_and_replaces_worker(
        tmp_path: Path) -> None:
    with quiesce.ProcessPool(1, grace=0.2, kill_after=0.2, mp_context="forkserver") as pool:
        before = pool.submit(pid_of_worker).result(20)
        future = pool.submit(ignore_everything, str(tmp_path / "ready"))
        wait_running(future)
        wait_for_file(tmp_path / "ready")  # SIGTERM is ignored from now on
        future.cancel()
        after = pool.submit(pid_of_worker).result(20)
        assert after != before
        assert not alive(before)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("spelling", ["pool-wide", "per-call"])
def test_task_timeout(kind: str, spelling: str, tmp_path: Path) -> None:
    marker = tmp_path / "woke"
    pool = make(kind, task_timeout=0.3 if spelling == "pool-wide" else None, grace=0.5,
                kill_after=0.5)
    try:
        if spelling == "pool-wide":
            future = pool.submit(wait_for_stop, str(marker))
        else:
            future = pool.submit_with(wait_for_stop, str(marker), timeout=0.3)
        started = time.monotonic()
        with pytest.raises(TimeoutError, match=r"timed out after 0\.3 s"):
            future.result(20)
        assert 0.25 <= time.monotonic() - started < 0.3 + MARGIN
        fast = pool.submit_with(add, 1, 2, timeout=5)
        assert fast.result(20) == 3
        deadline = time.monotonic() + MARGIN
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert marker.read_text() == "True timed out"
    finally:
        pool.stop()


# -- deaths ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("death", [(exit_hard, (7,), 7), (kill_self, (), -signal.SIGKILL),
                                   (segfault, (), -signal.SIGSEGV)],
                         ids=["os._exit", "SIGKILL", "segfault"])
def test_a_dying_worker_fails_only_its_task(death: tuple[object, tuple[object, ...], int]) -> None:
    fn, args, code = death
    with quiesce.ProcessPool(2, mp_context="forkserver") as pool:
        neighbour = pool.submit(slow, 0.5)
        doomed = pool.submit(fn, *args)  # type: ignore[arg-type]
        with pytest.raises(quiesce.ProcessDied) as info:
            doomed.result(20)
        assert info.value.exitcode == code
        assert neighbour.result(20) == 0.5
        assert [f.result(20) for f in [pool.submit(add, i) for i in range(10)]] == list(range(10))


@pytest.mark.parametrize("method", multiprocessing.get_all_start_methods())
def test_process_pool_under_each_start_method(method: str, tmp_path: Path) -> None:
    marker = tmp_path / "finally"
    with quiesce.ProcessPool(1, grace=0.2, kill_after=5, mp_context=method) as pool:
        first = pool.submit(pid_of_worker).result(20)
        running = pool.submit(ignore_token, str(marker), str(tmp_path / "ready"))
        wait_running(running)
        wait_for_file(tmp_path / "ready")  # inside its try
        running.cancel()
        with pytest.raises(quiesce.ProcessDied):
            pool.submit(exit_hard, 3).result(20)
        assert marker.read_text() == "finally ran"  # the cancel ran before the death
        second = pool.submit(pid_of_worker).result(20)
        assert second != first and not alive(first)


# -- stop -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
def test_stop_is_bounded_even_when_tasks_ignore_everything(kind: str) -> None:
    pool = make(kind, grace=0.5, kill_after=0.5)
    stuck = [pool.submit(ignore_everything if kind == "process" else slow,
                         *(() if kind == "process" else (3,))) for _ in range(2)]
    queued = pool.submit(add, 1)
    for future in stuck:
        wait_running(future)
    started = time.monotonic()
    pool.stop()
    took = time.monotonic() - started
    assert took < 0.5 + 0.5 + MARGIN
    assert all(f.cancelled() for f in [*stuck, queued])


@pytest.mark.parametrize("kind", KINDS)
def test_twenty_cycles_leak_no_fd_thread_or_process(kind: str) -> None:
    def counts() -> tuple[int, int]:
        return len(os.listdir("/proc/self/fd")), threading.active_count()

    def cycles(n: int) -> None:
        for _ in range(n):
            pool = make(kind)
            assert pool.submit(add, 1, 1).result(20) == 2
            pool.stop()

    cycles(3)  # first use starts lazy singletons: launcher, watcher, guardian, forkserver
    time.sleep(0.2)  # let them settle: a count taken early is higher, the check only laxer
    before = counts()
    cycles(20)
    deadline = time.monotonic() + 5
    while counts() != before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert counts()[0] <= before[0], f"fds {before[0]} -> {counts()[0]}"
    assert counts()[1] <= before[1] + 1, f"threads {before[1]} -> {counts()[1]}"


# -- tokens ---------------------------------------------------------------------------------------

def test_each_thread_task_has_its_own_token_and_a_kept_token_is_not_reused() -> None:
    with quiesce.ThreadPool(1) as pool:
        first, second = (pool.submit(pool_tasks.token_id).result(20) for _ in range(2))
        assert first == second  # an unused token serves the next task: no allocation
        kept = pool.submit(pool_tasks.keep_token).result(20)
        later = {pool.submit(pool_tasks.token_id).result(20) for _ in range(3)}
        assert kept not in later
        future = pool.submit(wait_for_stop, os.devnull)
        wait_running(future)
        future.cancel()
        assert not pool_tasks.kept_tokens[-1].stopped


# -- scopes ---------------------------------------------------------------------------------------

def test_scope_pools_join_then_stop_with_the_scope() -> None:
    with quiesce.Scope(grace=0.3, kill_after=0.3, mp_context="forkserver") as scope:
        threads, processes = scope.thread_pool(2), scope.process_pool(2)
        done = [threads.submit(slow, 0.1), processes.submit(slow, 0.1)]
        assert scope.join(20)
        assert [f.result(0) for f in done] == [0.1, 0.1]
        stuck = [threads.submit(slow, 3), processes.submit(ignore_everything)]
        for future in stuck:
            wait_running(future)
        started = time.monotonic()
    assert time.monotonic() - started < 0.6 + MARGIN
    assert all(f.cancelled() for f in stuck)
    # the hardest ending: the stuck thread was abandoned, the stuck process killed
    assert [r.ended_by for r in scope.report()] == ["abandoned", "killed"]


# -- bad input ------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
def test_bad_input(kind: str) -> None:
    with pytest.raises(ValueError, match="max_workers"):
        make(kind, max_workers=0)
    with pytest.raises(ValueError, match="task_timeout"):
        make(kind, task_timeout=-1)
    with pytest.raises(ValueError, match="grace"):
        make(kind, grace=float("nan"))
    pool = make(kind)
    try:
        with pytest.raises(TypeError, match="fn must be callable"):
            pool.submit(42)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="timeout must be > 0"):
            pool.submit_with(add, 1, timeout=0)
        if kind == "process":
            with pytest.raises(TypeError, match=r"^ProcessPool.submit: .*<lambda>"):
                pool.submit(lambda: 1)
    finally:
        pool.stop()


def test_stdlib_pools_cannot_stop_a_running_task() -> None:
    """Negative control: what the pools above add."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        future = pool.submit(slow, 0.3)
        wait_running(future)
        assert future.cancel() is False


def test_multiprocessing_is_untouched() -> None:
    assert multiprocessing.current_process().name == "MainProcess"
