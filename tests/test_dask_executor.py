"""quiesce.dask.Executor on a real LocalCluster: the pools' semantics over dask.

The cluster of this module never had the Ladder registered by hand: the
Executor registers it on demand. Cancel of a running task, per-task timeouts,
a bounded stop() and a Scope owning the executor are checked through what the
tasks themselves saw (files they write) and the futures.
"""

from __future__ import annotations

import concurrent.futures
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("distributed")

import distributed

import quiesce
import quiesce.dask

import dask_tasks
from dask_support import client, cluster, no_leaked_processes, wait_for_workers  # noqa: F401
from procs import seconds_until_gone

GRACE = 0.5
KILL_AFTER = 0.5
MARGIN = 8.0


def has_ladder(client: distributed.Client) -> set[bool]:
    found = client.run(lambda dask_worker: "quiesce-ladder" in dask_worker.plugins)
    return set(found.values())


def test_registers_the_plugin_and_runs_tasks(client: distributed.Client) -> None:
    assert has_ladder(client) == {False}  # negative control: nobody registered it
    with quiesce.dask.Executor(client, grace=GRACE, kill_after=KILL_AFTER) as ex:
        assert has_ladder(client) == {True}
        assert ex.submit(dask_tasks.add, 2, 3).result(timeout=30) == 5
        assert list(ex.map(dask_tasks.add, [1, 2, 3], [10, 20, 30])) == [11, 22, 33]
        is_root, stopped, _, _ = ex.submit(dask_tasks.token_facts).result(timeout=30)
        assert not is_root and not stopped
    with quiesce.dask.Executor(client) as again:  # idempotent: a second one is fine
        assert again.submit(dask_tasks.add, 1, 1).result(timeout=30) == 2


def test_cancel_of_a_running_task(client: distributed.Client, tmp_path: Path) -> None:
    with quiesce.dask.Executor(client, grace=GRACE, kill_after=KILL_AFTER) as ex:
        future = ex.submit(dask_tasks.wait_on_token_param, str(tmp_path))
        dask_tasks.wait_for_file(tmp_path / "started")
        asked = time.monotonic()
        assert future.cancel()
        assert future.cancelled()  # at once, as a pool's future
        with pytest.raises(concurrent.futures.CancelledError):
            future.result(timeout=0)
        woke, stopped, same = dask_tasks.wait_for_file(tmp_path / "woke").split()
        assert stopped == "True" and same == "True"  # token= is current_token()
        assert float(woke) - asked < 1.0


def test_task_timeout(client: distributed.Client, tmp_path: Path) -> None:
    with quiesce.dask.Executor(client, task_timeout=0.5, grace=GRACE,
                               kill_after=KILL_AFTER) as ex:
        started = time.monotonic()
        slow = ex.submit(dask_tasks.napping, 30)
        with pytest.raises(TimeoutError, match=r"0\.5 s"):
            slow.result(timeout=30)
        assert time.monotonic() - started < 0.5 + MARGIN
        # Negative control: a task within its limit is not touched.
        assert ex.submit(dask_tasks.napping, 0.05).result(timeout=30) == 0.05
        # Per call: None lifts the executor's limit; a shorter one applies.
        assert ex.submit_with(dask_tasks.napping, 0.8, timeout=None).result(timeout=30) == 0.8
        ignoring = ex.submit_with(dask_tasks.ignore_stop, str(tmp_path), timeout=0.3)
        with pytest.raises(TimeoutError):
            ignoring.result(timeout=30)
        # The timed-out task itself was stopped: Stopped reached its finally.
        assert "Stopped" in dask_tasks.wait_for_file(tmp_path / "finally", GRACE + MARGIN)


def test_stop_is_bounded(client: distributed.Client, cluster: Any, tmp_path: Path) -> None:
    pids = wait_for_workers(client, cluster)
    coop, stubborn = tmp_path / "coop", tmp_path / "stubborn"
    coop.mkdir()
    stubborn.mkdir()
    ex = quiesce.dask.Executor(client, grace=GRACE, kill_after=KILL_AFTER)
    futures = [ex.submit(dask_tasks.wait_on_token, str(coop)),
               ex.submit(dask_tasks.ignore_stop, str(stubborn))]
    queued = ex.submit(dask_tasks.add, 1, 2)  # may wait for a slot: cancelled too
    dask_tasks.wait_for_file(coop / "started")
    dask_tasks.wait_for_file(stubborn / "started")
    started = time.monotonic()
    ex.stop()
    took = time.monotonic() - started
    assert took < GRACE + KILL_AFTER + MARGIN
    assert all(f.cancelled() for f in futures)
    assert queued.done()
    assert "Stopped" in dask_tasks.wait_for_file(stubborn / "finally", 1.0)
    assert "True" in dask_tasks.wait_for_file(coop / "woke", 1.0)
    with pytest.raises(RuntimeError, match="after shutdown or stop"):
        ex.submit(dask_tasks.add, 1, 1)
    assert wait_for_workers(client, cluster) == pids  # Stopped sufficed: no restart


def test_a_scope_owns_an_executor_made_in_its_block(client: distributed.Client,
                                                    tmp_path: Path) -> None:
    started = time.monotonic()
    with quiesce.Scope(grace=GRACE, kill_after=KILL_AFTER, name="job") as scope:
        ex = quiesce.dask.Executor(client, grace=GRACE, kill_after=KILL_AFTER)
        future = ex.submit(dask_tasks.ignore_stop, str(tmp_path))
        dask_tasks.wait_for_file(tmp_path / "started")
    assert time.monotonic() - started < GRACE + KILL_AFTER + MARGIN
    assert future.cancelled()
    assert "Stopped" in dask_tasks.wait_for_file(tmp_path / "finally", 1.0)
    [report] = scope.report()
    assert report.name.startswith("job/dask_executor")
    assert report.ended_by in ("stopped", "terminated")


def test_bad_arguments() -> None:
    with pytest.raises(TypeError, match="client"):
        quiesce.dask.Executor("tcp://127.0.0.1:8786")  # type: ignore[arg-type]


def test_bad_durations(client: distributed.Client) -> None:
    with pytest.raises(ValueError, match="task_timeout"):
        quiesce.dask.Executor(client, task_timeout=0)
    with pytest.raises(ValueError, match="grace"):
        quiesce.dask.Executor(client, grace=-1)


def test_shutdown_cancel_futures_cancels_only_what_waits(client: distributed.Client,
                                                        tmp_path: Path) -> None:
    ex = quiesce.dask.Executor(client, grace=GRACE, kill_after=KILL_AFTER)
    folders = [tmp_path / "a", tmp_path / "b"]
    for folder in folders:
        folder.mkdir()
    # One per slot; each waits 1.5 s on its token, which nobody stops, and returns.
    running = [ex.submit(dask_tasks.wait_on_token, str(f), 1.5) for f in folders]
    for folder in folders:
        dask_tasks.wait_for_file(folder / "started")
    queued = [ex.submit(dask_tasks.napping, 30) for _ in range(3)]
    ex.shutdown(wait=True, cancel_futures=True)
    assert [f.result(timeout=0) for f in running] == [None, None]  # as the stdlib: ran on
    assert all(f.cancelled() for f in queued)


def test_stopped_from_the_token_current_where_it_was_made(client: distributed.Client,
                                                         tmp_path: Path) -> None:
    from quiesce._core._context import using

    owner = quiesce.StopToken()
    with using(owner):
        ex = quiesce.dask.Executor(client, grace=GRACE, kill_after=KILL_AFTER)
    future = ex.submit(dask_tasks.ignore_stop, str(tmp_path))
    dask_tasks.wait_for_file(tmp_path / "started")
    owner.stop("owner stopping")  # as handle_signals does on SIGTERM
    assert "Stopped" in dask_tasks.wait_for_file(tmp_path / "finally", GRACE + MARGIN)
    assert future.cancelled()
    with pytest.raises(RuntimeError, match="stopped from above"):
        ex.submit(dask_tasks.add, 1, 1)


@pytest.mark.slow
def test_stop_with_a_task_stuck_in_c_restarts_its_worker(client: distributed.Client,
                                                        cluster: Any, tmp_path: Path) -> None:
    before = wait_for_workers(client, cluster)
    ex = quiesce.dask.Executor(client, grace=GRACE, kill_after=KILL_AFTER)
    future = ex.submit(dask_tasks.stuck_in_c, str(tmp_path))
    worker_pid = int(dask_tasks.wait_for_file(tmp_path / "started"))
    started = time.monotonic()
    ex.stop()
    assert time.monotonic() - started < GRACE + KILL_AFTER + MARGIN
    assert future.cancelled()
    # stop() returns once the stuck worker left the cluster; its process exits
    # within the plugin's 0.5 s close allowance.
    assert not seconds_until_gone([worker_pid], MARGIN)[1]
    after = wait_for_workers(client, cluster)
    assert worker_pid in before and worker_pid not in after and len(after) == 2
