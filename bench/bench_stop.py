"""How fast a stop reaches workers: quiesce against the hand-written baselines.

Run: .venv/bin/python bench/bench_stop.py [--rounds N]

All numbers come from one run on the same machine, and the table shows
ratios, because shared machines are noisy. Measured:

* check cost: one ``stopped`` check in a hot loop (quiesce token, a
  threading.Event, a plain global flag, a multiprocessing.Event);
* thread stop latency: from the stop request until a sleeping worker
  thread has returned (the seed's flag-and-sleep loop with a 1 s nap,
  threading.Event.wait, StopToken.wait, a Scope thread in quiesce.sleep);
* process stop latency: from the stop request until the child has been
  reaped (multiprocessing.Event + join, a Scope process on its token);
* stuck process: a child that ignores everything (Process.terminate is
  ignored: it never ends; the Scope ends it by its ladder).
"""

from __future__ import annotations

import argparse
import multiprocessing
import signal
import statistics
import sys
import threading
import time
from collections.abc import Callable

import quiesce
from _bytecode import ensure_quiesce_bytecode

FLAG_NAP = 1.0  # the seed's loop slept 10 s; 1 s keeps this bench short


def median_of(rounds: int, measure: Callable[[], float]) -> float:
    return statistics.median(measure() for _ in range(rounds))


# -- check cost ---------------------------------------------------------------------
def check_cost(check: Callable[[], object], n: int = 200_000) -> float:
    started = time.perf_counter()
    for _ in range(n):
        check()
    return (time.perf_counter() - started) / n


# -- thread stop latency ----------------------------------------------------------------
_flag = False


def thread_stop(wait: Callable[[], object], stop: Callable[[], object]) -> float:
    """Time from ``stop()`` until a thread blocked in ``wait()`` has returned."""
    t = threading.Thread(target=wait)
    t.start()
    time.sleep(0.05)
    started = time.perf_counter()
    stop()
    t.join()
    return time.perf_counter() - started


def flag_and_sleep() -> None:
    while not _flag:
        time.sleep(FLAG_NAP)


def set_flag(value: bool) -> None:
    global _flag
    _flag = value


def thread_flag() -> float:
    set_flag(False)
    return thread_stop(flag_and_sleep, lambda: set_flag(True))


def thread_event() -> float:
    event = threading.Event()
    return thread_stop(event.wait, event.set)


def thread_token() -> float:
    token = quiesce.StopToken()
    return thread_stop(token.wait, token.stop)


def sleeps_on_token() -> None:
    quiesce.sleep(60)


def thread_scope() -> float:
    with quiesce.Scope(grace=5, kill_after=1) as scope:
        scope.thread(sleeps_on_token)
        time.sleep(0.05)
        started = time.perf_counter()
    return time.perf_counter() - started


# -- process stop latency -----------------------------------------------------------------
def wait_mp_event(event: multiprocessing.synchronize.Event) -> None:
    event.wait()


def process_mp_event(ctx: multiprocessing.context.BaseContext) -> float:
    event = ctx.Event()
    p = ctx.Process(target=wait_mp_event, args=(event,))  # type: ignore[attr-defined]
    p.start()
    time.sleep(0.2)
    started = time.perf_counter()
    event.set()
    p.join()
    return time.perf_counter() - started


def wait_token(token: quiesce.StopToken) -> None:
    token.wait()


def process_scope(ctx: multiprocessing.context.BaseContext) -> float:
    with quiesce.Scope(grace=5, kill_after=1, mp_context=ctx) as scope:
        scope.process(wait_token)
        time.sleep(0.2)
        started = time.perf_counter()
    return time.perf_counter() - started


def ignore_everything() -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    while True:
        time.sleep(0.01)


def stuck_terminate(ctx: multiprocessing.context.BaseContext, patience: float) -> float:
    p = ctx.Process(target=ignore_everything)  # type: ignore[attr-defined]
    p.start()
    time.sleep(0.2)
    started = time.perf_counter()
    p.terminate()
    p.join(patience)
    took = time.perf_counter() - started
    if p.is_alive():
        p.kill()
        p.join()
        return float("inf")
    return took


def stuck_scope(ctx: multiprocessing.context.BaseContext, grace: float, kill_after: float) -> float:
    with quiesce.Scope(grace=grace, kill_after=kill_after, mp_context=ctx) as scope:
        scope.process(ignore_everything)
        time.sleep(0.2)
        started = time.perf_counter()
    return time.perf_counter() - started


def fmt(seconds: float) -> str:
    if seconds == float("inf"):
        return "never"
    if seconds < 1e-3:
        return f"{seconds * 1e9:.0f} ns" if seconds < 1e-6 else f"{seconds * 1e6:.1f} µs"
    return f"{seconds * 1e3:.1f} ms"


def table(title: str, rows: list[tuple[str, float]], reference: str) -> None:
    ref = dict(rows)[reference]
    print(f"\n{title}  (ratio: time / {reference})")
    for name, value in rows:
        ratio = "-" if value == float("inf") else f"{value / ref:.2f}x"
        print(f"  {name:<40} {fmt(value):>12} {ratio:>10}")


def main() -> int:
    ensure_quiesce_bytecode()  # as installed: see bench/_bytecode.py
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    rounds = parser.parse_args().rounds
    ctx = multiprocessing.get_context("forkserver")
    token, event, mp_event = quiesce.StopToken(), threading.Event(), ctx.Event()
    table("one stop check in a hot loop", [
        ("quiesce StopToken.stopped", check_cost(lambda: token.stopped)),
        ("threading.Event.is_set()", check_cost(lambda: event.is_set())),
        ("global flag", check_cost(lambda: _flag)),
        ("multiprocessing.Event.is_set()", check_cost(lambda: mp_event.is_set(), 20_000)),
    ], "threading.Event.is_set()")
    table("thread: stop request -> worker returned (median)", [
        (f"flag-and-sleep loop ({FLAG_NAP:.0f} s nap)", median_of(rounds, thread_flag)),
        ("threading.Event.wait", median_of(rounds, thread_event)),
        ("quiesce StopToken.wait", median_of(rounds, thread_token)),
        ("quiesce Scope thread in quiesce.sleep", median_of(rounds, thread_scope)),
    ], "threading.Event.wait")
    table("process (forkserver): stop request -> child reaped (median)", [
        ("multiprocessing.Event + join", median_of(rounds, lambda: process_mp_event(ctx))),
        ("quiesce Scope process on its token", median_of(rounds, lambda: process_scope(ctx))),
    ], "multiprocessing.Event + join")
    table("process ignoring SIGTERM: stop -> ended", [
        ("Process.terminate() + join (3 s patience)", stuck_terminate(ctx, 3.0)),
        ("quiesce Scope(grace=0.2, kill_after=0.2)", stuck_scope(ctx, 0.2, 0.2)),
    ], "quiesce Scope(grace=0.2, kill_after=0.2)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
