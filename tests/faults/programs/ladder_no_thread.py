"""A scope whose ladder thread cannot be started (RLIMIT_NPROC as ``nobody``, or RLIMIT_AS).

Starts a scope with threads and a process waiting on their tokens, then
lowers RLIMIT_NPROC to the tasks the user already has, so no new thread
can start, stops the scope (which would start the ladder thread) and
leaves it. The ladder must still run (in the exiting thread) and end every
worker. Prints "cannot start a thread: ..." (the
limit took effect), then "exited" plus the ended_by of each worker.
"""

from __future__ import annotations

import os
import resource
import sys
import threading
import time

import quiesce


def wait_for_stop(token: quiesce.StopToken) -> None:
    token.wait()
    # Hold the task slot a while (well within the grace): the scope stops the tokens
    # before it tries to start its ladder thread, and that start must still find no slot.
    time.sleep(0.2)


def tasks_of_uid(uid: int) -> int:
    count = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            if os.stat(f"/proc/{pid}").st_uid == uid:
                count += len(os.listdir(f"/proc/{pid}/task"))
        except OSError:
            continue
    return count


def drop_root() -> None:
    """Root ignores RLIMIT_NPROC: become ``nobody`` (modules needed later imported first)."""
    if os.getuid() != 0:
        return
    import multiprocessing.popen_fork  # noqa: F401  (the interpreter's files are root's)
    import pickle  # noqa: F401
    import subprocess  # noqa: F401

    # quiesce's __init__ imports lazily: load what this program uses while root can read it
    quiesce.Scope, quiesce.StopToken  # noqa: B018
    os.chdir("/")
    os.setgroups([])
    os.setgid(65534)
    os.setuid(65534)


def vm_size() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmSize")


def limit_threads(how: str) -> None:
    """No new thread from now on: by RLIMIT_NPROC, or RLIMIT_AS (no room for a stack)."""
    if how == "nproc":
        limit = tasks_of_uid(os.getuid())
        resource.setrlimit(resource.RLIMIT_NPROC, (limit, limit))
    else:
        room = vm_size() + 4 * 1024 * 1024  # heap to spare, not an 8 MiB thread stack
        resource.setrlimit(resource.RLIMIT_AS, (room, resource.RLIM_INFINITY))


def report_thread_limit() -> None:
    """Say whether a thread can still be started: the test checks the limit took."""
    try:
        threading.Thread(target=lambda: None).start()
        print("a thread still started; the limit did not take", flush=True)
    except RuntimeError as exc:
        print(f"cannot start a thread: {exc}", flush=True)


def main() -> None:
    how = sys.argv[1] if len(sys.argv) > 1 else "nproc"
    if how == "nproc":
        drop_root()
    with quiesce.Scope(grace=0.5, kill_after=0.5) as scope:
        for _ in range(3):
            scope.thread(wait_for_stop)
        scope.process(wait_for_stop)
        scope.popen(["sleep", "30"])
        quiesce.StopToken().on_stop(lambda: None)  # helper threads up before the limit
        limit_threads(how)
        report_thread_limit()
        # A stop made inside the block begins the ladder in a thread of its own (leaving
        # the block would run it in the leaving thread, needing no thread at all).
        scope.stop("the limit is in place")
    print("exited", " ".join(str(w.ended_by) for w in scope.workers), flush=True)


if __name__ == "__main__":
    sys.exit(main())
