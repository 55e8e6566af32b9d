"""A program using quiesce.run; argv: MODE DIR.

Modes:
  workers   a thread, a process and a popen tree that each write DIR/<name> in
            their finally/trap, then 'ready' on stdout; main sleeps on its token
  blocked   like workers, but main blocks in time.sleep (not quiesce.sleep)
  return-N  main returns N
  raise     main raises ValueError
  stubborn  a process worker ignoring SIGTERM; grace 30 s (a 2nd signal must hurry)
"""

import os
import signal
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import quiesce


def thread_worker(path: str) -> None:
    try:
        quiesce.sleep(60)
    finally:
        with open(path, "w") as f:
            f.write("thread finally")


def process_worker(path: str) -> None:
    try:
        while True:
            time.sleep(0.01)  # ignores its token: the ladder's SIGTERM raises Stopped
    finally:
        with open(path, "w") as f:
            f.write("process finally")


def stubborn() -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    while True:
        time.sleep(0.01)


def main(mode: str, directory: str) -> int:
    if mode.startswith("return-"):
        return int(mode.split("-", 1)[1])
    if mode == "raise":
        raise ValueError("main failed on purpose")
    with quiesce.Scope(grace=0.5 if mode != "stubborn" else 30, kill_after=30) as scope:
        if mode == "stubborn":
            scope.process(stubborn)
        else:
            scope.thread(thread_worker, os.path.join(directory, "thread"))
            scope.process(process_worker, os.path.join(directory, "process"))
            marker = os.path.join(directory, "popen")
            scope.popen(["bash", "-c", f"trap 'echo trapped > {marker}; exit 0' TERM; "
                         "sleep 60 & wait"])
        time.sleep(0.3)  # let the workers install their handlers
        try:  # before 'ready': the signal may land the moment it is printed
            print("ready", flush=True)
            if mode == "blocked":
                time.sleep(60)
            else:
                quiesce.sleep(60)
        finally:
            with open(os.path.join(directory, "main"), "w") as f:
                f.write("main finally")
    return 3


if __name__ == "__main__":
    quiesce.run(main, sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else ".",
                grace=1.0, kill_after=1.0)
