"""What a deadline block costs, and how late it ends: quiesce against stopit and func-timeout.

Run: .venv/bin/python bench/bench_deadlines.py [--n N] [--rounds R]
(``pip install -e '.[bench]'`` for stopit and func-timeout; rows for a
missing one are skipped.)

Measured, on one machine in one run:

* enter + leave an unexpired block whose body does nothing, per block:
  a bare ``with`` (contextlib.nullcontext), ``quiesce.move_on_after(60)``,
  nested 10 deep (per block), stopit's ``ThreadingTimeout`` (a
  threading.Timer, so a thread, per block), stopit's ``SignalTimeout``
  (SIGALRM: main thread only, one at a time) and ``func_timeout`` (a thread
  per call);
* expiry lateness: from the deadline until ``quiesce.sleep(10)`` inside
  ``move_on_after(d)`` has returned to the code after the block, in the
  main thread (which waits in 50 ms slices, see _main_wait) and in a
  worker thread; median and worst of R rounds. For reference, stopit's
  ``ThreadingTimeout`` around a loop of 1 ms sleeps (it can only interrupt
  between bytecodes: a plain ``time.sleep(10)`` would not end early at all).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import threading
import time
from collections.abc import Callable

import quiesce


def per_call(n: int, body: Callable[[], object]) -> float:
    started = time.perf_counter()
    for _ in range(n):
        body()
    return (time.perf_counter() - started) / n


def bare() -> None:
    with contextlib.nullcontext():
        pass


def move_on() -> None:
    with quiesce.move_on_after(60):
        pass


def nested_10() -> None:
    with contextlib.ExitStack() as stack:
        for _ in range(10):
            stack.enter_context(quiesce.move_on_after(60))


def lateness_quiesce(delay: float) -> float:
    with quiesce.move_on_after(delay) as cs:
        quiesce.sleep(10)
    assert cs.deadline is not None
    return time.monotonic() - cs.deadline


def in_thread(fn: Callable[[], float]) -> float:
    out: list[float] = []
    thread = threading.Thread(target=lambda: out.append(fn()))
    thread.start()
    thread.join()
    return out[0]


def stopit_rows(n: int) -> list[tuple[str, float]]:
    try:
        import stopit  # type: ignore[import-untyped]
    except ImportError:
        return []

    def threading_timeout() -> None:
        with stopit.ThreadingTimeout(60):
            pass

    def signal_timeout() -> None:
        with stopit.SignalTimeout(60):
            pass

    return [("stopit.ThreadingTimeout (thread per block)", per_call(max(n // 20, 50),
                                                                     threading_timeout)),
            ("stopit.SignalTimeout (SIGALRM, main only)", per_call(n, signal_timeout))]


def func_timeout_rows(n: int) -> list[tuple[str, float]]:
    try:
        from func_timeout import func_timeout  # type: ignore[import-untyped]
    except ImportError:
        return []
    return [("func_timeout (thread per call)", per_call(max(n // 20, 50),
                                                       lambda: func_timeout(60, _noop)))]


def _noop() -> None:
    pass


def lateness_stopit(delay: float, rounds: int) -> tuple[list[float], int] | None:
    """stopit's lateness, and how often its exception escaped its block.

    Its timer thread raises asynchronously in the blocked thread; when that
    lands outside the block (in the next block's ``__enter__``, say) the
    exception escapes to whatever code runs there.
    """
    try:
        import stopit
    except ImportError:
        return None
    values, escaped = [], 0
    for _ in range(rounds):
        try:
            started = time.monotonic()
            with stopit.ThreadingTimeout(delay):
                for _ in range(10_000):
                    time.sleep(0.001)
            values.append(time.monotonic() - (started + delay))
        except stopit.TimeoutException:
            escaped += 1
    return values, escaped


def summary(values: list[float]) -> str:
    return f"median {statistics.median(values) * 1e3:7.3f} ms   worst {max(values) * 1e3:7.3f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=20_000, help="blocks per cost row")
    parser.add_argument("--rounds", type=int, default=50, help="expiries per lateness row")
    args = parser.parse_args()

    move_on()  # the timer thread and the root token exist before anything is timed
    rows: list[tuple[str, float]] = [
        ("bare with (nullcontext)", per_call(args.n, bare)),
        ("quiesce.move_on_after(60)", per_call(args.n, move_on)),
        ("quiesce.move_on_after(60), nested 10 deep", per_call(args.n // 10, nested_10) / 10),
    ]
    rows += stopit_rows(args.n)
    rows += func_timeout_rows(args.n)
    base = rows[1][1]
    print("enter + leave an unexpired block (per block)")
    for name, seconds in rows:
        print(f"  {name:45s} {seconds * 1e6:9.2f} us   {seconds / base:7.2f}x quiesce")

    print(f"\nexpiry lateness: deadline -> quiesce.sleep(10) returns ({args.rounds} rounds)")
    delay = 0.02
    main_values = [lateness_quiesce(delay) for _ in range(args.rounds)]
    thread_values = [in_thread(lambda: lateness_quiesce(delay)) for _ in range(args.rounds)]
    print(f"  {'quiesce, main thread':45s} {summary(main_values)}")
    print(f"  {'quiesce, worker thread':45s} {summary(thread_values)}")
    stopit_result = lateness_stopit(delay, min(args.rounds, 20))
    if stopit_result is not None:
        values, escaped = stopit_result
        print(f"  {'stopit.ThreadingTimeout, 1 ms sleep loop':45s} {summary(values)}"
              f"   ({escaped} of {len(values) + escaped} raised outside their block)")

if __name__ == "__main__":
    main()
