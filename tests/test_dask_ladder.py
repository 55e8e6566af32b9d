"""quiesce.dask.Ladder on a real LocalCluster: cancel of a RUNNING task stops it.

Each test cancels a task that is really running on a worker process (after a
file handshake) and checks what the task itself saw: its token stopping,
``Stopped`` in its thread, its subprocesses ending, and the worker slot serving
again. Negative controls: a task nobody cancels is not stopped, and a task that
ends by ``Stopped`` costs no worker restart.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("distributed")

import distributed

import quiesce.dask

import dask_tasks
from dask_support import client, cluster, no_leaked_processes, wait_for_workers  # noqa: F401
from procs import alive, seconds_until_gone

GRACE = 0.5
KILL_AFTER = 0.5
MARGIN = 8.0


@pytest.fixture(scope="module", autouse=True)
def ladder(client: distributed.Client) -> None:
    client.register_plugin(quiesce.dask.Ladder(grace=GRACE, kill_after=KILL_AFTER))


def events_for(client: distributed.Client, key: str, limit: float = 10.0) -> list[dict[str, Any]]:
    """The plugin's reports about ``key`` (waits until there is one)."""
    deadline = time.monotonic() + limit
    while True:
        found = [msg for _, msg in client.get_events("quiesce") if msg.get("key") == key]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.02)


def test_each_task_has_its_own_token(client: distributed.Client) -> None:
    first, second = client.gather([client.submit(dask_tasks.token_facts, pure=False)
                                   for _ in range(2)])
    assert first[0] is False and second[0] is False  # not the worker's root token
    assert first[1] is False and "local" in first[2]
    # Negative control: outside a task, the worker's code sees its root token.
    outside = client.run(lambda: __import__("dask_tasks").token_facts()[0])
    assert set(outside.values()) == {True}


def test_cancel_stops_the_running_tasks_token(client: distributed.Client,
                                              tmp_path: Path) -> None:
    cancelled, kept = tmp_path / "cancelled", tmp_path / "kept"
    cancelled.mkdir()
    kept.mkdir()
    victim = client.submit(dask_tasks.wait_on_token, str(cancelled), pure=False)
    other = client.submit(dask_tasks.wait_on_token, str(kept), 5.0, pure=False)
    dask_tasks.wait_for_file(cancelled / "started")
    dask_tasks.wait_for_file(kept / "started")
    asked = time.monotonic()
    victim.cancel()
    woke, stopped, reason = dask_tasks.wait_for_file(cancelled / "woke").split()
    assert stopped == "True" and reason == "cancelled"
    assert float(woke) - asked < 1.0  # goal 20 ms; generous for a loaded CI machine
    # Negative control: the task nobody cancelled was not stopped.
    assert other.result(timeout=30) is None
    assert dask_tasks.wait_for_file(kept / "woke").split()[1] == "False"
    [report] = events_for(client, victim.key)
    assert report["ended_by"] == "stopped" and report["reason"] == "cancelled"


def test_stopped_raised_after_grace_and_no_restart(client: distributed.Client, cluster: Any,
                                                   tmp_path: Path) -> None:
    pids = wait_for_workers(client, cluster)
    future = client.submit(dask_tasks.ignore_stop, str(tmp_path), pure=False)
    dask_tasks.wait_for_file(tmp_path / "started")
    asked = time.monotonic()
    future.cancel()
    ended, outcome = dask_tasks.wait_for_file(tmp_path / "finally", GRACE + MARGIN).split(" ", 1)
    assert outcome.startswith("Stopped")
    assert GRACE * 0.8 <= float(ended) - asked < GRACE + MARGIN
    [report] = events_for(client, future.key)
    assert report["ended_by"] == "terminated"
    # A task ended by Stopped costs no restart: the same worker processes serve on.
    time.sleep(KILL_AFTER + 0.3)  # deliberate observation window: past a kill's due time
    assert wait_for_workers(client, cluster) == pids
    assert client.submit(dask_tasks.add, 2, 3, pure=False).result(timeout=30) == 5


@pytest.mark.slow
def test_task_stuck_in_c_is_killed_and_its_slot_restarted(client: distributed.Client,
                                                          cluster: Any, tmp_path: Path) -> None:
    before = wait_for_workers(client, cluster)
    future = client.submit(dask_tasks.stuck_in_c, str(tmp_path), pure=False)
    worker_pid = int(dask_tasks.wait_for_file(tmp_path / "started"))
    child = int(dask_tasks.wait_for_file(tmp_path / "child"))
    assert alive(child)
    asked = time.monotonic()
    future.cancel()
    took, left = seconds_until_gone([child, worker_pid], GRACE + KILL_AFTER + MARGIN)
    assert not left, "the stuck task's subprocess or worker survived"
    assert took >= (GRACE + KILL_AFTER) * 0.8
    [report] = events_for(client, future.key)
    assert report["ended_by"] == "killed" and report["reason"] == "cancelled"
    # The nanny started a new worker in its place: two slots serve again.
    after = wait_for_workers(client, cluster)
    assert worker_pid not in after and len(after) == 2 and after & before
    results = client.gather([client.submit(dask_tasks.add, i, 1, pure=False) for i in range(4)])
    assert results == [1, 2, 3, 4]
    print(f"slot serving again {time.monotonic() - asked:.2f} s after the cancel")


def test_scope_inside_a_task_ends_with_its_cancel(client: distributed.Client, cluster: Any,
                                                  tmp_path: Path) -> None:
    pids = wait_for_workers(client, cluster)
    future = client.submit(dask_tasks.scope_in_task, str(tmp_path), pure=False)
    dask_tasks.wait_for_file(tmp_path / "started")
    children = [int(p) for p in dask_tasks.wait_for_file(tmp_path / "pids").split()]
    assert all(alive(p) for p in children)
    future.cancel()
    _, left = seconds_until_gone(children, GRACE + MARGIN)
    assert not left
    dask_tasks.wait_for_file(tmp_path / "finally", MARGIN)
    [report] = events_for(client, future.key)
    # The scope's own ladder (grace 0.3 s) ends it, normally within the Ladder's grace;
    # on a loaded machine Stopped may cut the scope's exit short, never a kill.
    assert report["ended_by"] in ("stopped", "terminated"), report
    assert wait_for_workers(client, cluster) == pids


def test_process_pool_inside_a_task_ends_with_its_cancel(client: distributed.Client,
                                                         tmp_path: Path) -> None:
    future = client.submit(dask_tasks.pool_in_task, str(tmp_path), pure=False)
    dask_tasks.wait_for_file(tmp_path / "started")
    pool_worker = int(dask_tasks.wait_for_file(tmp_path / "pids"))
    assert alive(pool_worker)
    future.cancel()
    _, left = seconds_until_gone([pool_worker], GRACE + MARGIN)
    assert not left
    dask_tasks.wait_for_file(tmp_path / "finally", MARGIN)
    [report] = events_for(client, future.key)
    assert report["ended_by"] in ("stopped", "terminated")


@pytest.mark.parametrize(("kwargs", "name"), [
    ({"grace": -1}, "grace"), ({"kill_after": math.nan}, "kill_after"),
    ({"grace": math.inf}, "grace"),
])
def test_bad_durations_name_the_argument(kwargs: dict[str, float], name: str) -> None:
    with pytest.raises(ValueError, match=name):
        quiesce.dask.Ladder(**kwargs)


def test_import_without_distributed_names_the_extra() -> None:
    code = ("import sys; sys.modules['distributed'] = None\n"
            "try:\n    import quiesce.dask\nexcept ImportError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, env={**os.environ, "PYTHONPATH": ""})
    assert "pip install 'quiesce[dask]'" in out.stdout, out.stderr


def test_registering_again_leaves_running_tasks_alone(client: distributed.Client,
                                                      tmp_path: Path) -> None:
    future = client.submit(dask_tasks.wait_on_token, str(tmp_path), 1.5, pure=False)
    dask_tasks.wait_for_file(tmp_path / "started")
    client.register_plugin(quiesce.dask.Ladder(grace=GRACE, kill_after=KILL_AFTER))
    assert future.result(timeout=30) is None  # its token was not stopped by the swap
    assert dask_tasks.wait_for_file(tmp_path / "woke").split()[1] == "False"
