"""scope.process() with the fd table full but for k fds, for every small k.

Run under ``prlimit --nofile=96``. The guardian is started first, so each
attempt runs out of fds somewhere in the start of a process worker: its
pipe, the fork, its pidfd (then it gets a thread of its own), or the
shared monitor's epoll fd (then the child is ended and the error raised).
Every attempt must end one of two ways, never hang and never leave a
child behind: "finished 49" or "raised ...". Prints one line per k, then
"after: ..." for one more worker with every fd free.
"""

from __future__ import annotations

import os
import sys

from watcher_emfile import exhaust, release

import quiesce
from quiesce._proc import _lineage
from quiesce._proc._guardian_client import Guardian


def square(x: int) -> int:
    return x * x


def attempt() -> str:
    try:
        with quiesce.Scope(grace=2, kill_after=1, mp_context="fork") as scope:
            worker = scope.process(square, 7)
            scope.join()
        return f"{worker.ended_by} {worker.result}"
    except OSError as exc:
        tb = exc.__traceback__
        while tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
        where = tb.tb_frame.f_code.co_name if tb is not None else "?"
        return f"raised {type(exc).__name__} {exc.errno} in {where}"


def children(guardian: int | None) -> list[int]:
    kids = _lineage.children_of(os.getpid()) or []
    return [k for k in kids if k != guardian]


def main() -> int:
    guardian = Guardian.get().pid
    quiesce.StopToken().on_stop(lambda: None)  # the token watcher up before the squeeze
    for k in range(0, 14):
        held = exhaust()
        for fd in held[len(held) - k:] if k else []:
            os.close(fd)
        del held[len(held) - k:]
        try:
            outcome = attempt()
        finally:
            release(held)
        left = children(guardian)
        print(f"{k}: {outcome}" + (f" LEFT {left}" if left else ""), flush=True)
        if left:
            return 1
    print("after:", attempt(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
