"""quiesce at the limit: every cost of issue #11 as a ratio to its stdlib baseline.

Run: .venv/bin/python bench/bench_limits.py [--rounds R] [--start-method M] [--only ROW ...]

``--only`` runs just the named rows (``stopped``, ``quiesce-stopped``,
``threads``, ``processes``, ``processes-cpu``, ``start``, ``wake``,
``import``, ``orphan``);
without it, every row runs.

Each row times quiesce and its baseline in the same run, taking turns round
after round (baseline, quiesce, baseline, quiesce, ...), so the noise of a
shared machine falls on both alike; the row shows both medians and the
ratio of the medians (quiesce / baseline: lower is better) next to the goal.
A row that times one short event (threads, processes, start, wake) takes
``EVENTS_PER_ROUND`` samples per round: one process start swings by 2x
from sample to sample on a shared machine, and 7 samples cannot median that
away.

Rows:

* ``token.stopped`` in a hot loop vs ``threading.Event.is_set()``;
* ``quiesce.stopped()`` in a hot loop vs polling a module-level bool;
* 100 threads waiting on their tokens: scope exit vs ``Event.set()`` + join;
* 8 processes waiting on their tokens: scope exit vs
  ``multiprocessing.Event.set()`` + join;
* the CPU behind that row, under fork (the only start method whose
  children are ours to account): the owner's, and each child's from the
  stop to its exit (``getrusage``; no goal: on 2 cores the row's time is
  about this CPU, halved);
* ``scope.process(f)`` vs ``multiprocessing.Process(target=f).start()``
  (same start method; the time of the call that starts it);
* ``scope.stop()`` -> a thread blocked in ``quiesce.sleep(10)`` returns vs
  ``Event.set()`` -> ``Event.wait()`` returns;
* ``python -c 'import quiesce'`` vs ``python -c 'import concurrent.futures'``;
* owner SIGKILLed -> its orphaned worker process dead (median and worst;
  no baseline: the stdlib's orphan never dies).

Pool throughput lives in bench_pools.py; CLI start-up in bench_startup.py.
"""

from __future__ import annotations

import argparse
import mmap
import multiprocessing
import os
import resource
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from multiprocessing.context import BaseContext

import quiesce
from _bytecode import ensure_quiesce_bytecode

Measure = Callable[[], float]
_flag = False


def take_turns(rounds: int, baseline: Measure, ours: Measure) -> tuple[float, float]:
    """Median seconds of each, measured alternately."""
    base: list[float] = []
    mine: list[float] = []
    for _ in range(rounds):
        base.append(baseline())
        mine.append(ours())
    return statistics.median(base), statistics.median(mine)


# -- hot-loop checks ------------------------------------------------------------------------
LOOP = 200_000


def loop_token_stopped() -> float:
    token = quiesce.StopToken()
    started = time.perf_counter()
    for _ in range(LOOP):
        if token.stopped:
            break
    return (time.perf_counter() - started) / LOOP


def loop_event_is_set() -> float:
    event = threading.Event()
    started = time.perf_counter()
    for _ in range(LOOP):
        if event.is_set():
            break
    return (time.perf_counter() - started) / LOOP


def loop_quiesce_stopped() -> float:
    stopped = quiesce.stopped
    started = time.perf_counter()
    for _ in range(LOOP):
        if stopped():
            break
    return (time.perf_counter() - started) / LOOP


def loop_global_flag() -> float:
    started = time.perf_counter()
    for _ in range(LOOP):
        if _flag:
            break
    return (time.perf_counter() - started) / LOOP


# -- many waiting threads ------
THREADS = 100


def threads_event() -> float:
    event = threading.Event()
    ready = threading.Barrier(THREADS + 1)

    def wait() -> None:
        ready.wait()
        event.wait()

    threads = [threading.Thread(target=wait) for _ in range(THREADS)]
    for t in threads:
        t.start()
    ready.wait()
    time.sleep(0.02)
    started = time.perf_counter()
    event.set()
    for t in threads:
        t.join()
    return time.perf_counter() - started


def threads_scope() -> float:
    ready = threading.Barrier(THREADS + 1)

    def wait(token: quiesce.StopToken) -> None:
        ready.wait()
        token.wait()

    with quiesce.Scope(grace=5, kill_after=1) as scope:
        for _ in range(THREADS):
            scope.thread(wait)
        ready.wait()
        time.sleep(0.02)
        started = time.perf_counter()
    return time.perf_counter() - started


# -- many waiting processes ------
PROCESSES = 8


def wait_mp_event(event: multiprocessing.synchronize.Event, ready: object) -> None:
    ready.release()  # type: ignore[attr-defined]
    event.wait()


def wait_token(ready: quiesce.StopToken, token: quiesce.StopToken) -> None:
    ready.stop()
    token.wait()


def processes_mp_event(ctx: BaseContext) -> float:
    event, ready = ctx.Event(), ctx.Semaphore(0)
    procs = [ctx.Process(target=wait_mp_event, args=(event, ready))  # type: ignore[attr-defined]
             for _ in range(PROCESSES)]
    for p in procs:
        p.start()
    for _ in procs:
        ready.acquire()
    started = time.perf_counter()
    event.set()
    for p in procs:
        p.join()
    return time.perf_counter() - started


def processes_scope(ctx: BaseContext) -> float:
    # scope.process pickles its arguments up front: a semaphore cannot travel that way
    readies = [quiesce.StopToken() for _ in range(PROCESSES)]
    with quiesce.Scope(grace=5, kill_after=1, mp_context=ctx) as scope:
        for ready in readies:
            scope.process(wait_token, ready)
        for ready in readies:
            ready.wait()
        started = time.perf_counter()
    return time.perf_counter() - started


# -- the CPU behind the 8-process row ------
# Under fork the children are ours, so getrusage(RUSAGE_CHILDREN) counts each one's
# CPU once it is reaped; each child writes the CPU it had spent when it was ready
# into this anonymous shared mapping (inherited by fork), so what it spent from the
# stop to its exit is the difference.
_READY_CPU = mmap.mmap(-1, 8 * PROCESSES)


def _note_ready_cpu(slot: int) -> None:
    _READY_CPU[slot * 8:slot * 8 + 8] = struct.pack("d", time.process_time())


def _ready_cpu_total() -> float:
    return sum(struct.unpack(f"{PROCESSES}d", _READY_CPU[:]))


def wait_mp_event_cpu(event: multiprocessing.synchronize.Event, ready: object, slot: int) -> None:
    _note_ready_cpu(slot)
    wait_mp_event(event, ready)


def wait_token_cpu(ready: quiesce.StopToken, slot: int, token: quiesce.StopToken) -> None:
    _note_ready_cpu(slot)
    wait_token(ready, token)


def _cpu(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def cpu_mp_event(ctx: BaseContext) -> tuple[float, float]:
    """(owner CPU, children's CPU each) from the set() to the last join."""
    event, ready = ctx.Event(), ctx.Semaphore(0)
    procs = [ctx.Process(target=wait_mp_event_cpu, args=(event, ready, i))  # type: ignore[attr-defined]
             for i in range(PROCESSES)]
    for p in procs:
        p.start()
    for _ in procs:
        ready.acquire()
    owner, children = _cpu(resource.RUSAGE_SELF), _cpu(resource.RUSAGE_CHILDREN)
    event.set()
    for p in procs:
        p.join()
    spent = _cpu(resource.RUSAGE_CHILDREN) - children - _ready_cpu_total()
    return _cpu(resource.RUSAGE_SELF) - owner, spent / PROCESSES


def cpu_scope(ctx: BaseContext) -> tuple[float, float]:
    readies = [quiesce.StopToken() for _ in range(PROCESSES)]
    with quiesce.Scope(grace=5, kill_after=1, mp_context=ctx) as scope:
        for i, ready in enumerate(readies):
            scope.process(wait_token_cpu, ready, i)
        for ready in readies:
            ready.wait()
        owner, children = _cpu(resource.RUSAGE_SELF), _cpu(resource.RUSAGE_CHILDREN)
    spent = _cpu(resource.RUSAGE_CHILDREN) - children - _ready_cpu_total()
    return _cpu(resource.RUSAGE_SELF) - owner, spent / PROCESSES


# -- process start ------
def noop() -> None:
    pass


def start_mp_process(ctx: BaseContext) -> float:
    p = ctx.Process(target=noop)  # type: ignore[attr-defined]
    started = time.perf_counter()
    p.start()
    took = time.perf_counter() - started
    p.join()
    return took


def start_scope_process(ctx: BaseContext) -> float:
    with quiesce.Scope(grace=5, kill_after=1, mp_context=ctx) as scope:
        started = time.perf_counter()
        scope.process(noop)
        took = time.perf_counter() - started
        scope.join()
    return took


# -- one sleeping thread woken ------
def wake_event() -> float:
    event, ready, done = threading.Event(), threading.Event(), threading.Event()

    def sleeper() -> None:
        ready.set()
        event.wait(10)
        done.set()

    t = threading.Thread(target=sleeper)
    t.start()
    ready.wait()
    time.sleep(0.01)
    started = time.perf_counter()
    event.set()
    done.wait()
    took = time.perf_counter() - started
    t.join()
    return took


def wake_scope_sleep() -> float:
    ready, done = threading.Event(), threading.Event()

    def sleeper() -> None:
        ready.set()
        try:
            quiesce.sleep(10)
        finally:
            done.set()

    with quiesce.Scope(grace=5, kill_after=1) as scope:
        scope.thread(sleeper)
        ready.wait()
        time.sleep(0.01)
        started = time.perf_counter()
        scope.stop()
        done.wait()
        took = time.perf_counter() - started
    return took


# -- import time ------
def import_time(module: str) -> Callable[[], float]:
    def measure() -> float:
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", f"import {module}"], check=True)
        return time.perf_counter() - started
    return measure


# -- orphan latency ------
_OWNER = """
import os, sys, quiesce
def child(path):
    with open(path, "w") as f:
        f.write(str(os.getpid()))
    quiesce.sleep(60)
if __name__ == "__main__":
    with quiesce.Scope(mp_context=sys.argv[2]) as scope:
        scope.process(child, sys.argv[1])
        scope.join()
"""


def orphan_latency(start_method: str) -> float:
    """Owner SIGKILLed -> its worker process gone (seconds)."""
    with tempfile.TemporaryDirectory() as tmp:
        pidfile, script = os.path.join(tmp, "pid"), os.path.join(tmp, "owner.py")
        with open(script, "w") as f:
            f.write(_OWNER)  # a file, not -c: spawn and forkserver children import __main__
        owner = subprocess.Popen([sys.executable, script, pidfile, start_method])
        try:
            deadline = time.monotonic() + 30
            while not (os.path.exists(pidfile) and os.path.getsize(pidfile)):
                if time.monotonic() > deadline:
                    raise RuntimeError("the owner's worker never started")
                time.sleep(0.005)
            with open(pidfile) as f:
                pid = int(f.read())
            pidfd = os.pidfd_open(pid)  # the worker is not our child: watch it by pidfd
        finally:
            started = time.perf_counter()
            owner.kill()
            owner.wait()
        try:
            import select
            if not select.select([pidfd], [], [], 10)[0]:
                return float("inf")
            return time.perf_counter() - started
        finally:
            os.close(pidfd)


# -- the table ------
def fmt(seconds: float) -> str:
    if seconds == float("inf"):
        return "never"
    if seconds < 1e-6:
        return f"{seconds * 1e9:.0f} ns"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} µs"
    return f"{seconds * 1e3:.1f} ms"


def row(what: str, base_name: str, base: float, ours: float, goal: float | None) -> None:
    ratio = ours / base
    verdict = "" if goal is None else ("ok" if ratio <= goal else "MISSED")
    goal_text = "" if goal is None else f"<= {goal:.1f}x"
    print(f"  {what:<52} {fmt(ours):>10}  vs {base_name:<34} {fmt(base):>10}"
          f"  {ratio:6.2f}x  {goal_text:>7} {verdict}")


EVENTS_PER_ROUND = 5

ROWS = ("stopped", "quiesce-stopped", "threads", "processes", "processes-cpu", "start", "wake",
        "import", "orphan")


def main() -> int:
    ensure_quiesce_bytecode()  # as installed: see bench/_bytecode.py
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--start-method", default="forkserver",
                        choices=multiprocessing.get_all_start_methods())
    parser.add_argument("--only", nargs="+", choices=ROWS, metavar="ROW",
                        help=f"run only these rows (of {', '.join(ROWS)})")
    args = parser.parse_args()
    rounds, method = args.rounds, args.start_method
    ctx = multiprocessing.get_context(method)
    print(f"bench_limits: {time.strftime('%Y-%m-%d %H:%M %Z')}, {os.cpu_count()} cores, "
          f"Python {sys.version.split()[0]}, start method {method}, median of {rounds} rounds"
          f" ({rounds * EVENTS_PER_ROUND} samples for one-event rows)")
    events = rounds * EVENTS_PER_ROUND
    only = set(args.only or ROWS)
    if "stopped" in only:
        b, q = take_turns(rounds, loop_event_is_set, loop_token_stopped)
        row("token.stopped (hot loop)", "threading.Event.is_set()", b, q, 1.0)
    if "quiesce-stopped" in only:
        b, q = take_turns(rounds, loop_global_flag, loop_quiesce_stopped)
        row("quiesce.stopped() (hot loop)", "module-level bool", b, q, 3.5)
    if "threads" in only:
        b, q = take_turns(events, threads_event, threads_scope)
        row(f"{THREADS} threads on tokens: scope exit", "Event.set() + join", b, q, 1.1)
    if "processes" in only:
        b, q = take_turns(events, lambda: processes_mp_event(ctx), lambda: processes_scope(ctx))
        row(f"{PROCESSES} processes on tokens: scope exit", "mp.Event.set() + join", b, q, 1.2)
    if "processes-cpu" in only:
        fork = multiprocessing.get_context("fork")
        base_cpu: list[tuple[float, float]] = []
        ours_cpu: list[tuple[float, float]] = []
        for _ in range(events):
            base_cpu.append(cpu_mp_event(fork))
            ours_cpu.append(cpu_scope(fork))
        for i, who in enumerate(("owner", "each child")):
            row(f"{PROCESSES} processes, CPU stop -> reaped (fork): {who}", "mp.Event.set() + join",
                statistics.median(c[i] for c in base_cpu),
                statistics.median(c[i] for c in ours_cpu), None)
    if "start" in only:
        b, q = take_turns(events, lambda: start_mp_process(ctx), lambda: start_scope_process(ctx))
        row("scope.process(f) start", "Process(target=f).start()", b, q, 1.3)
    if "wake" in only:
        b, q = take_turns(events, wake_event, wake_scope_sleep)
        row("scope.stop() -> quiesce.sleep(10) returns", "Event.set() -> Event.wait()", b, q,
            None)
    if "import" in only:
        b, q = take_turns(rounds, import_time("concurrent.futures"), import_time("quiesce"))
        row("python -c 'import quiesce'", "import concurrent.futures", b, q, 1.0)
    if "orphan" in only:
        orphans = [orphan_latency(method) for _ in range(rounds)]
        print(f"  {'owner SIGKILL -> orphan dead':<52} median {fmt(statistics.median(orphans))}, "
              f"worst {fmt(max(orphans))} (stdlib: never)")
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.exit(main())
