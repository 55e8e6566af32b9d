"""quiesce.aio against plain asyncio, as ratios (goal: <= 1.2x).

Run: .venv/bin/python bench/bench_aio.py [--rounds R] [--samples N] [--loop asyncio|uvloop]

1. Wake-up latency: a coroutine waits; another thread stops a StopToken
   (``await token.wait_async()``) or sets an ``asyncio.Event`` the usual
   way, ``loop.call_soon_threadsafe(event.set)``. Time from the other
   thread's call until the waiter runs again.
2. Ending 100 tasks: ``async with quiesce.Scope()`` holding 100 tasks
   (``scope.task``) asleep, and leaving the block (which cancels them and
   waits for the ladder) against ``asyncio.TaskGroup`` with 100 tasks whose
   body cancels them all and leaves. Time from the end of the body until
   the block has been left.
3. A call to a trivial function in a thread: ``quiesce.aio.to_thread`` (a
   new daemon thread and a token per call, so it can be stopped) against
   ``asyncio.to_thread`` (the loop's default executor, threads reused).

The two sides take turns, sample after sample, so the machine's noise falls
on both alike; each round reports the median of its samples and the table
shows the median of the rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import queue
import statistics
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import quiesce

TASKS = 100


class Stopper:
    """A thread that runs one call on request and records when it made it."""

    def __init__(self) -> None:
        self.requests: queue.SimpleQueue[Callable[[], Any] | None] = queue.SimpleQueue()
        self.sent_at = 0.0
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while (call := self.requests.get()) is not None:
            self.sent_at = time.perf_counter()
            call()

    def close(self) -> None:
        self.requests.put(None)
        self.thread.join()


async def latency_token(stopper: Stopper) -> float:
    token = quiesce.StopToken()
    waiter = asyncio.ensure_future(token.wait_async())
    await asyncio.sleep(0.001)  # registered and asleep
    stopper.requests.put(token.stop)
    await waiter
    return time.perf_counter() - stopper.sent_at


async def latency_event(stopper: Stopper) -> float:
    event = asyncio.Event()
    loop = asyncio.get_running_loop()
    waiter = asyncio.ensure_future(event.wait())
    await asyncio.sleep(0.001)
    stopper.requests.put(lambda: loop.call_soon_threadsafe(event.set))
    await waiter
    return time.perf_counter() - stopper.sent_at


async def sleeper() -> None:
    await asyncio.sleep(3600)


async def exit_scope() -> float:
    async with quiesce.Scope(grace=5.0) as scope:
        for _ in range(TASKS):
            scope.task(sleeper())
        await asyncio.sleep(0.001)
        started = time.perf_counter()
    return time.perf_counter() - started


async def exit_task_group() -> float:
    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(sleeper()) for _ in range(TASKS)]
        await asyncio.sleep(0.001)
        started = time.perf_counter()
        for task in tasks:
            task.cancel()
    return time.perf_counter() - started


def nothing() -> None:
    pass


async def call_quiesce_to_thread() -> float:
    import quiesce.aio

    started = time.perf_counter()
    await quiesce.aio.to_thread(nothing)
    return time.perf_counter() - started


async def call_asyncio_to_thread() -> float:
    started = time.perf_counter()
    await asyncio.to_thread(nothing)
    return time.perf_counter() - started


async def rounds(rounds: int, samples: int) -> dict[str, list[float]]:
    cases = {"wait_async": latency_token, "asyncio.Event": latency_event}
    results: dict[str, list[float]] = {name: [] for name in
                                       [*cases, "Scope exit", "TaskGroup exit",
                                        "aio.to_thread", "asyncio.to_thread"]}
    stopper = Stopper()
    try:
        for _ in range(rounds):
            per_round: dict[str, list[float]] = {name: [] for name in results}
            for _ in range(samples):
                for name, case in cases.items():
                    per_round[name].append(await case(stopper))
                per_round["Scope exit"].append(await exit_scope())
                per_round["TaskGroup exit"].append(await exit_task_group())
                per_round["aio.to_thread"].append(await call_quiesce_to_thread())
                per_round["asyncio.to_thread"].append(await call_asyncio_to_thread())
            for name, values in per_round.items():
                results[name].append(statistics.median(values))
    finally:
        stopper.close()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--samples", type=int, default=50)
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    args = parser.parse_args()
    factory: Callable[[], asyncio.AbstractEventLoop] = asyncio.new_event_loop
    if args.loop == "uvloop":
        import uvloop

        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        results = runner.run(rounds(args.rounds, args.samples))
    median = {name: statistics.median(values) for name, values in results.items()}
    print(f"loop: {args.loop}; median of {args.rounds} rounds x {args.samples} samples, "
          f"taking turns", flush=True)
    for ours, theirs, what in (("wait_async", "asyncio.Event", "wake-up from another thread"),
                               ("Scope exit", "TaskGroup exit", f"ending {TASKS} tasks"),
                               ("aio.to_thread", "asyncio.to_thread", "one call in a thread")):
        print(f"{what}:\n  {ours:<16} {median[ours] * 1e6:9.1f} us\n"
              f"  {theirs:<16} {median[theirs] * 1e6:9.1f} us\n"
              f"  ratio            {median[ours] / median[theirs]:9.2f}x", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
