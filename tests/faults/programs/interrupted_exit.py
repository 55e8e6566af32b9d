"""A KeyboardInterrupt while the leaving thread runs its scope's ladder.

Leaving a block runs the ladder in the leaving thread. Here the worker
process ignores SIGTERM and its token; once its token is stopped (the
ladder has begun) it creates the file named by argv[1], and the test sends
SIGINT, so KeyboardInterrupt is raised in the middle of the ladder's grace.
The ladder must not be lost with it: its rest runs in a thread, at the same
deadlines, so the worker is still SIGKILLed after grace + kill_after.
Prints "interrupted", then "ended", whether the worker ended within 10 s,
how, and the seconds from the stop to its end.
"""

from __future__ import annotations

import signal
import sys
import time

import quiesce


def stubborn(path: str) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    quiesce.current_token().wait()  # the ladder has begun
    open(path, "w").close()  # the test sends SIGINT now
    while True:
        time.sleep(1)


def main() -> None:
    try:
        with quiesce.Scope(grace=1, kill_after=1, mp_context="fork") as scope:
            worker = scope.process(stubborn, sys.argv[1])
    except KeyboardInterrupt:
        print("interrupted", flush=True)
    ended = worker.join(10)
    report = worker.report()
    print("ended", ended, worker.ended_by, f"{(report.stop_ms or 0) / 1000:.1f}", flush=True)


if __name__ == "__main__":
    main()
