"""The same job with quiesce: it ends, promptly and cleanly.

The child process gets the stop ladder (token, then SIGTERM raising
``Stopped`` so ``finally`` runs, then SIGKILL); the thread sleeps on its
token, so it wakes the moment a stop is requested instead of 10 s later.
"""

import sys
import time

import quiesce


def crunch() -> None:
    try:
        while True:  # ignores its token: the ladder's SIGTERM ends it
            time.sleep(0.1)
    finally:
        print("quiesce: child process ran its finally", flush=True)


def poll() -> None:
    while not quiesce.stopped():
        quiesce.sleep(10)  # wakes at once on stop


def main() -> int:
    with quiesce.Scope(grace=0.5, kill_after=1.0, name="job") as scope:
        scope.process(crunch)
        scope.thread(poll)
        pool = scope.thread_pool(1)
        pool.submit(poll)  # a pool task: stopped with the scope like the rest
        print("quiesce: main() returns now", flush=True)
    for line in scope.report():
        print(f"quiesce: {line}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
