"""quiesce.dask against plain dask: how fast a cancel of a RUNNING task takes effect.

Run: .venv/bin/python bench/bench_dask.py [--rounds R]   (needs quiesce[dask])

A ``LocalCluster(processes=True)`` with one worker of one thread, so "the
slot" is unambiguous. Each task writes ``time.monotonic()`` stamps to files
(CLOCK_MONOTONIC is machine-wide), compared with the stamp taken just before
``future.cancel()`` in the client.

1. cancel -> token stopped: a task blocked in ``current_token().wait()``;
   the time until it wakes. Plain dask: the task has no token; whether it
   still runs 2.5 s after ``client.cancel(force=True)`` is shown instead.
2. cancel -> ``Stopped`` delivered: a pure-Python loop that ignores its
   token; the time until its ``finally`` runs (Ladder grace 0.2 s, so
   about 200 ms of it is the grace itself).
3. cancel of a task stuck in C (``select`` on nothing for 100 s) -> slot
   serving again: the time until a probe task submitted right after the
   cancel returns (Ladder grace 0.2 s + kill_after 0.2 s, then the worker
   is restarted by its nanny). Plain dask: the probe waits for the stuck
   task; "never" means not within PATIENCE seconds.

Medians of R rounds (cases 1 and 2), and of 3 rounds for case 3.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import distributed

import quiesce.dask
from _bytecode import ensure_quiesce_bytecode

PATIENCE = 10.0
GRACE = 0.2
KILL_AFTER = 0.2


def _note(path: str, text: str) -> None:
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.replace(path + ".tmp", path)


def _wait_file(path: Path, limit: float = 30.0) -> str | None:
    deadline = time.monotonic() + limit
    while not path.exists():
        if time.monotonic() > deadline:
            return None
        time.sleep(0.001)
    return path.read_text()


def waits_on_token(folder: str) -> None:
    import quiesce

    token = quiesce.current_token()
    _note(f"{folder}/started", "")
    token.wait(60)
    _note(f"{folder}/woke", repr(time.monotonic()))


def ignores_token(folder: str, limit: float = 60.0) -> None:
    _note(f"{folder}/started", "")
    end = time.monotonic() + limit
    try:
        while time.monotonic() < end:
            _note(f"{folder}/beat", repr(time.monotonic()))
            time.sleep(0.01)
    finally:
        _note(f"{folder}/finally", repr(time.monotonic()))


def stuck_in_c(folder: str) -> None:
    import select

    _note(f"{folder}/started", "")
    select.select([], [], [], 100)


def probe() -> int:
    return os.getpid()


def _cluster() -> tuple[Any, distributed.Client]:
    cluster = distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                                       dashboard_address=None, silence_logs=logging.CRITICAL)
    return cluster, distributed.Client(cluster)


def _start(client: distributed.Client, fn: Any, *args: Any) -> tuple[Any, Path]:
    folder = Path(tempfile.mkdtemp(prefix="bench-dask-"))
    future = client.submit(fn, str(folder), *args, pure=False)
    if _wait_file(folder / "started") is None:
        raise RuntimeError(f"{fn.__name__} never started")
    return future, folder


def token_latency(client: distributed.Client) -> float:
    future, folder = _start(client, waits_on_token)
    asked = time.monotonic()
    future.cancel()
    woke = _wait_file(folder / "woke", 10)
    assert woke is not None, "token never stopped"
    return (float(woke) - asked) * 1000


def stopped_latency(client: distributed.Client) -> float:
    future, folder = _start(client, ignores_token)
    asked = time.monotonic()
    future.cancel()
    ended = _wait_file(folder / "finally", 10)
    assert ended is not None, "Stopped never arrived"
    return (float(ended) - asked) * 1000


def slot_back(client: distributed.Client, force: bool) -> float | None:
    future, _ = _start(client, stuck_in_c)
    asked = time.monotonic()
    client.cancel([future], force=force)
    try:
        client.submit(probe, pure=False).result(timeout=PATIENCE)
    except TimeoutError:
        return None
    return (time.monotonic() - asked) * 1000


def plain_still_running(client: distributed.Client) -> bool:
    future, folder = _start(client, ignores_token, 3.5)  # ends by itself after 3.5 s
    client.cancel([future], force=True)
    time.sleep(2.5)
    beat = _wait_file(folder / "beat", 0)
    still = beat is not None and time.monotonic() - float(beat) < 0.5
    _wait_file(folder / "finally", 10)
    return still


def _median(values: list[float]) -> str:
    return f"{statistics.median(values):7.1f} ms (min {min(values):.1f}, max {max(values):.1f})"


def main() -> int:
    ensure_quiesce_bytecode()  # as installed: see bench/_bytecode.py
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()

    cluster, client = _cluster()
    try:
        still = plain_still_running(client)
        plain_slot = slot_back(client, force=True)
    finally:
        client.close()
        cluster.close(timeout=30)

    cluster, client = _cluster()
    try:
        client.register_plugin(quiesce.dask.Ladder(grace=GRACE, kill_after=KILL_AFTER))
        tokens = [token_latency(client) for _ in range(args.rounds)]
        stops = [stopped_latency(client) for _ in range(args.rounds)]
        slots = [s for s in (slot_back(client, force=False) for _ in range(3)) if s is not None]
    finally:
        client.close()
        cluster.close(timeout=30)

    print(f"LocalCluster(processes=True), 1 worker x 1 thread; {args.rounds} rounds")
    print("1. cancel -> token stopped")
    print(f"   quiesce.dask.Ladder      {_median(tokens)}")
    print(f"   plain dask               no token; task still running 2.5 s after "
          f"cancel(force=True): {'yes' if still else 'no'}")
    print(f"2. cancel -> Stopped delivered in a task ignoring its token (grace {GRACE:g} s)")
    print(f"   quiesce.dask.Ladder      {_median(stops)}")
    print("   plain dask               never")
    print(f"3. cancel of a task stuck in C -> slot serving again "
          f"(grace {GRACE:g} s + kill_after {KILL_AFTER:g} s + restart)")
    print(f"   quiesce.dask.Ladder      {_median(slots) if slots else 'never'}")
    shown = "never" if plain_slot is None else f"{plain_slot:.1f} ms"
    print(f"   plain dask (force=True)  {shown} (patience {PATIENCE:g} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
