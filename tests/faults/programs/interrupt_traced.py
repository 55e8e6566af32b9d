"""``Scope(interrupt_threads=True)`` under a tracer (as coverage or a debugger run it).

Twenty scopes, each with a thread in a pure-Python busy loop (interrupted
after grace), one waiting on its token, one already finished. Prints the
endings of the last scope's workers and "done"; a lock-up (every thread
spinning at function entry: Python 3.11 after SetAsyncExc(ident, NULL))
shows as a timeout instead.
"""

from __future__ import annotations

import sys
import threading
from types import FrameType
from typing import Any

import quiesce


def tracer(frame: FrameType, event: str, arg: Any) -> Any:
    return tracer


def busy(token: quiesce.StopToken) -> None:
    while True:
        sum(range(100))


def obeys(token: quiesce.StopToken) -> None:
    token.wait()


def main() -> None:
    sys.settrace(tracer)
    threading.settrace(tracer)
    for _ in range(20):
        with quiesce.Scope(grace=0.05, kill_after=1.0, interrupt_threads=True) as scope:
            scope.thread(busy)
            scope.thread(obeys)
            scope.thread(sum, [])
    print(" ".join(str(w.ended_by) for w in scope.workers), flush=True)
    print("traced calls still run:", sum(range(10)), flush=True)
    print("done", flush=True)


if __name__ == "__main__":
    main()
