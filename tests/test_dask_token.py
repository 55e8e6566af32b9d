"""quiesce.dask.DistributedToken on a real LocalCluster: one stop, seen everywhere.

Tasks on both workers spin on ``token.stopped`` (a memory read); a stop made
on the client, or in another task, must reach them all with its reason.
"""

from __future__ import annotations

import select
import time
from pathlib import Path

import pytest

pytest.importorskip("distributed")

import distributed

import quiesce
import quiesce.dask

import dask_tasks
from dask_support import client, cluster, no_leaked_processes  # noqa: F401


def spin_on_both_workers(client: distributed.Client, token: quiesce.dask.DistributedToken,
                         folder: Path) -> list[distributed.Future]:
    workers = list(client.scheduler_info()["workers"])
    assert len(workers) == 2
    futures = [client.submit(dask_tasks.poll_token, token, str(folder), str(i),
                             workers=[w], pure=False) for i, w in enumerate(workers)]
    for i in range(2):
        dask_tasks.wait_for_file(folder / f"started-{i}")
    return futures


def test_stop_on_the_client_reaches_tasks_on_every_worker(client: distributed.Client,
                                                          tmp_path: Path) -> None:
    token = quiesce.dask.DistributedToken(client=client)
    futures = spin_on_both_workers(client, token, tmp_path)
    time.sleep(0.2)  # deliberate observation window for the negative control below
    # Negative control: nothing stopped it yet, both still spin.
    assert not any(f.done() for f in futures) and not token.stopped
    asked = time.monotonic()
    token.stop("enough")
    assert token.stopped and token.reason == "enough"
    assert client.gather(futures) == ["enough", "enough"]
    for i in range(2):
        assert float(dask_tasks.wait_for_file(tmp_path / f"woke-{i}")) - asked < 2.0


def test_stop_in_a_task_reaches_the_client_and_other_tasks(client: distributed.Client,
                                                           tmp_path: Path) -> None:
    token = quiesce.dask.DistributedToken(name=f"job-{tmp_path.name}")
    spinning_on, stopping_on = list(client.scheduler_info()["workers"])  # one slot each
    spinner = client.submit(dask_tasks.poll_token, token, str(tmp_path), "0",
                            workers=[spinning_on], pure=False)
    dask_tasks.wait_for_file(tmp_path / "started-0")
    assert client.submit(dask_tasks.stop_distributed, token, "from a task",
                         workers=[stopping_on], pure=False).result(timeout=30) is True
    assert token.wait(10)
    assert token.reason == "from a task"
    assert spinner.result(timeout=30) == "from a task"
    # The same name is the same token.
    assert quiesce.dask.DistributedToken(name=token.name, client=client).wait(10)


def test_local_side_works_as_a_stop_token(client: distributed.Client) -> None:
    token = quiesce.dask.DistributedToken(client=client)
    child = token.child()
    seen: list[str] = []
    token.on_stop(lambda: seen.append("called"))
    assert not token.wait(0.05)
    assert select.select([token.fileno()], [], [], 0)[0] == []
    with pytest.raises(quiesce.Stopped), quiesce.Scope(token=child, grace=0.5) as scope:
        worker = scope.thread(quiesce.sleep, 60)
        token.stop()
        assert worker.join(10)  # a stop from above: leaving the block raises Stopped
    assert child.stopped and seen == ["called"]
    assert select.select([token.fileno()], [], [], 0)[0] == [token.fileno()]
    with pytest.raises(quiesce.Stopped):
        token.raise_if_stopped()
    assert "stopped" in repr(token)


def test_bad_arguments() -> None:
    with pytest.raises(TypeError, match="name"):
        quiesce.dask.DistributedToken(name=3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="name"):
        quiesce.dask.DistributedToken(name="")
    with pytest.raises(TypeError, match="client"):
        quiesce.dask.DistributedToken(client="tcp://x")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="reason"):
        quiesce.dask.DistributedToken().stop(3)  # type: ignore[arg-type]
