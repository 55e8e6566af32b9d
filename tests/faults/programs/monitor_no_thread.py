"""The first scope.process() of a program that can start no more threads.

The process monitor is started on first need; here it cannot be (RLIMIT_NPROC
as ``nobody``, or RLIMIT_AS). scope.process() must raise that error, end the
child it had started, and the scope must still exit. Prints "cannot start a
thread: ..." (the limit took effect), then "raised ...", then "children N"
(live children left, the guardian aside), then "exited".
"""

from __future__ import annotations

import os
import sys

from ladder_no_thread import drop_root, limit_threads, report_thread_limit

import quiesce
from quiesce._proc import _lineage
from quiesce._proc._guardian_client import Guardian


def square(x: int) -> int:
    return x * x


def main() -> None:
    how = sys.argv[1] if len(sys.argv) > 1 else "nproc"
    if how == "nproc":
        drop_root()
    guardian = Guardian.get().pid  # up before the limit, like the token watcher
    quiesce.StopToken().on_stop(lambda: None)
    with quiesce.Scope(grace=0.5, kill_after=0.5, mp_context="fork") as scope:
        limit_threads(how)
        report_thread_limit()
        try:
            scope.process(square, 7)
            print("started", flush=True)
        except BaseException as exc:
            print(f"raised {type(exc).__name__}: {exc}", flush=True)
        kids = [k for k in _lineage.children_of(os.getpid()) or [] if k != guardian]
        live = [k for k in kids if _state(k) not in ("Z", None)]
        print(f"children {len(live)}", flush=True)
    print("exited", flush=True)


def _state(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rpartition(b")")[2].split()[0].decode()
    except OSError:
        return None


if __name__ == "__main__":
    sys.exit(main())
