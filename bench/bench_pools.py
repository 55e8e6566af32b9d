"""Pools against concurrent.futures, loky and pebble, in one run, as ratios.

Run: .venv/bin/python bench/bench_pools.py [--tasks N] [--rounds R]

1. Throughput: N tiny tasks (``x + 1``) submitted one by one, then every
   result collected, with 2 workers; each library with its default start
   method. The libraries take turns, round after round, so the machine's
   noise falls on all of them alike; the median of R rounds is shown.
2. Shutdown with 2 stuck tasks that ignore every stop request (SIGTERM
   included): time from the shutdown call until it returned with the
   workers gone (quiesce: ``stop()`` with grace 0.5 s, kill_after 0.5 s;
   its stuck threads are abandoned after the grace, they cannot be killed).
   Each case runs in a subprocess that is killed after PATIENCE seconds:
   "never" means the pool could not end them.
3. Idle shutdown: the end of a ``with`` block once all work is done
   (``shutdown(wait=True)``; pebble: ``close()`` + ``join()``), the most
   common ending of all.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from _bytecode import ensure_quiesce_bytecode

PATIENCE = 5.0
HERE = os.path.dirname(os.path.abspath(__file__))


def tiny(x: int) -> int:
    return x + 1


def stuck(_: int) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    while True:
        time.sleep(0.01)


def stuck_thread(_: int) -> None:
    while True:
        time.sleep(0.01)


# -- how each library submits, and how it shuts down -----------------------------------------
def _submit_std(pool: Any) -> Callable[[Any, int], Any]:
    return lambda fn, x: pool.submit(fn, x)


def _submit_pebble(pool: Any) -> Callable[[Any, int], Any]:
    return lambda fn, x: pool.schedule(fn, args=(x,))


def make(name: str) -> tuple[Any, Callable[[Any, int], Any]]:
    if name == "concurrent.futures threads":
        pool = cf.ThreadPoolExecutor(2)
        return pool, _submit_std(pool)
    if name == "quiesce ThreadPool":
        import quiesce

        pool = quiesce.ThreadPool(2, grace=0.5)
        return pool, _submit_std(pool)
    if name == "pebble ThreadPool":
        import pebble

        pool = pebble.ThreadPool(2)
        return pool, _submit_pebble(pool)
    if name == "concurrent.futures processes":
        pool = cf.ProcessPoolExecutor(2)
        return pool, _submit_std(pool)
    if name == "loky":
        import loky

        pool = loky.ProcessPoolExecutor(2)
        return pool, _submit_std(pool)
    if name == "pebble ProcessPool":
        import pebble

        pool = pebble.ProcessPool(2)
        return pool, _submit_pebble(pool)
    if name.startswith("quiesce ProcessPool"):
        import quiesce

        pool = quiesce.ProcessPool(2, grace=0.0 if "grace=0" in name else 0.5, kill_after=0.5)
        return pool, _submit_std(pool)
    raise ValueError(name)


def shut(name: str, pool: Any) -> None:
    if name.startswith("quiesce"):
        pool.stop()
    elif name.startswith("pebble"):
        pool.stop()
        pool.join()
    elif name == "loky":
        pool.shutdown(wait=True, kill_workers=True)
    else:
        pool.shutdown(wait=True, cancel_futures=True)


# -- the cases, each run in a child process ----------------------------------------------------
def case_throughput(name: str, tasks: int) -> float:
    pool, submit = make(name)
    [f.result() for f in [submit(tiny, i) for i in range(50)]]  # start the workers
    started = time.perf_counter()
    futures = [submit(tiny, i) for i in range(tasks)]
    for future in futures:
        future.result()
    took = time.perf_counter() - started
    shut(name, pool)
    return tasks / took


def case_shutdown(name: str) -> float:
    pool, submit = make(name)
    target = stuck_thread if "Thread" in name or "threads" in name else stuck
    futures = [submit(target, 0) for _ in range(2)]
    time.sleep(0.5)
    assert all(f.running() or not f.done() for f in futures)
    started = time.perf_counter()
    shut(name, pool)
    return time.perf_counter() - started


def case_idle(name: str) -> float:
    pool, submit = make(name)
    [f.result() for f in [submit(tiny, i) for i in range(50)]]
    started = time.perf_counter()
    if name.startswith("pebble"):
        pool.close()
        pool.join()
    else:
        pool.shutdown(wait=True)
    return time.perf_counter() - started


def run_case(args: list[str], patience: float) -> float | None:
    """Run one case in a child (its own session); None if it did not end in time."""
    proc = subprocess.Popen([sys.executable, __file__, "--case", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=patience)
        return float(json.loads(out)) if proc.returncode == 0 else None
    except subprocess.TimeoutExpired:
        return None
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # our own session: its workers only
            proc.wait()


THREADS = ["concurrent.futures threads", "quiesce ThreadPool", "pebble ThreadPool"]
PROCESSES = ["concurrent.futures processes", "loky", "pebble ProcessPool",
             "quiesce ProcessPool"]


def main() -> int:
    ensure_quiesce_bytecode()  # as installed: see bench/_bytecode.py
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--case", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        kind, name = args.case[0], args.case[1]
        if kind == "throughput":
            value = case_throughput(name, int(args.case[2]))
        else:
            value = case_idle(name) if kind == "idle" else case_shutdown(name)
        print(json.dumps(value))
        return 0

    print(f"throughput: {args.tasks} tiny tasks, 2 workers, median of {args.rounds} rounds")
    for group, reference in ((THREADS, THREADS[0]), (PROCESSES, PROCESSES[0])):
        runs: dict[str, list[float]] = {name: [] for name in group}
        for _ in range(args.rounds):
            for name in group:
                rate = run_case(["throughput", name, str(args.tasks)], 300)
                if rate is not None:
                    runs[name].append(rate)
        median = {name: statistics.median(r) if r else None for name, r in runs.items()}
        for name in group:
            rate, ref = median[name], median[reference]
            ratio = f"{rate / ref:.2f}x" if rate and ref else "-"
            shown = f"{rate:,.0f}/s" if rate else "failed"
            print(f"  {name:<32} {shown:>14} {ratio:>8}")

    print(f"\nshutdown with 2 stuck tasks ignoring SIGTERM (patience {PATIENCE:.0f} s)")
    for name in [*THREADS, *PROCESSES, "quiesce ProcessPool grace=0"]:
        took = run_case(["shutdown", name], PATIENCE + 10)
        shown = "never" if took is None or took > PATIENCE else f"{took * 1000:.0f} ms"
        print(f"  {name:<32} {shown:>14}")

    print("\nidle shutdown: shutdown(wait=True) once the work is done")
    for name in [*THREADS, *PROCESSES]:
        took = run_case(["idle", name], PATIENCE + 10)
        shown = "never" if took is None or took > PATIENCE else f"{took * 1000:.1f} ms"
        print(f"  {name:<32} {shown:>14}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
