"""Fixtures for the dask tests: one real LocalCluster per module, and its leak check.

Import the fixtures into a test module (``from dask_support import client,
cluster, no_leaked_processes``). A module shares one ``LocalCluster(processes=
True, n_workers=2)``: starting one costs about a second, restarting a worker
two. Its nanny and worker processes are started by the module fixture, outside
any test, and a worker restarted by its nanny during a test is a child of ours
started under that test's tag: so this module's ``no_leaked_processes``
(overriding the root conftest's) allows the cluster's *current* worker
processes and nothing else: whatever a task started must be gone. After the
module, closing the cluster must leave no process of ours behind.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

import psutil
import pytest

from conftest import checked_for_leaks

pytest.importorskip("distributed")

import distributed

import dask_tasks


def worker_pids(cluster: Any) -> set[int]:
    return {n.pid for n in cluster.workers.values() if n.pid is not None}


def wait_for_workers(client: distributed.Client, cluster: Any, n: int = 2,
                     limit: float = 30.0) -> set[int]:
    """Until ``n`` workers are registered and each runs a task; their PIDs."""
    client.wait_for_workers(n, timeout=limit)
    deadline = time.monotonic() + limit
    while True:
        pids = set(client.run(lambda: __import__("os").getpid()).values())
        if len(pids) >= n and pids == worker_pids(cluster):
            return pids
        if time.monotonic() > deadline:
            raise AssertionError(f"workers never settled: {pids} vs {worker_pids(cluster)}")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    started = {p.pid for p in psutil.Process().children(recursive=True)}
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       dashboard_address=None, silence_logs=logging.ERROR)
    try:
        yield cluster
    finally:
        cluster.close(timeout=30)
        deadline = time.monotonic() + 10
        while True:
            left = [p for p in psutil.Process().children(recursive=True)
                    if p.pid not in started and _counts(p)]
            if not left or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        for p in left:
            p.kill()
        assert not left, f"the cluster left processes behind: {[p.pid for p in left]}"


def _counts(p: psutil.Process) -> bool:
    try:
        cmd = " ".join(p.cmdline())
        return p.status() != psutil.STATUS_ZOMBIE and "resource_tracker" not in cmd \
            and "_guardian" not in cmd
    except psutil.Error:
        return False


@pytest.fixture(scope="module")
def client(cluster: Any) -> Iterator[distributed.Client]:
    with distributed.Client(cluster) as client:
        # dask runs done-callbacks on a stdlib (non-daemon) thread started on first
        # use: start it here, not inside the first test that uses one.
        done = client.submit(dask_tasks.add, 1, 1, pure=False)
        done.add_done_callback(lambda _: None)
        done.result()
        yield client


@pytest.fixture(autouse=True)
def no_leaked_processes(cluster: Any, client: distributed.Client) -> Iterator[str]:
    """The root conftest's check, allowing the cluster's current worker processes."""
    with checked_for_leaks(lambda: worker_pids(cluster), patience=5.0) as tag:
        yield tag
