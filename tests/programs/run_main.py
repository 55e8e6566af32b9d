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
import shutil
import signal
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import quiesce


def mark_ready(ready: str) -> None:
    with open(ready, "w"):
        pass


def wait_ready(ready_dir: str, count: int) -> None:
    """Until ``count`` workers have marked themselves ready (handlers set, inside try)."""
    deadline = time.monotonic() + 30
    while len(os.listdir(ready_dir)) < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {os.listdir(ready_dir)} of {count} workers got ready")
        time.sleep(0.005)


def thread_worker(path: str, ready: str) -> None:
    try:
        mark_ready(ready)
        quiesce.sleep(60)
    finally:
        with open(path, "w") as f:
            f.write("thread finally")


def process_worker(path: str, ready: str) -> None:
    try:
        mark_ready(ready)
        while True:
            time.sleep(0.01)  # ignores its token: the ladder's SIGTERM raises Stopped
    finally:
        with open(path, "w") as f:
            f.write("process finally")


def stubborn(ready: str) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    mark_ready(ready)
    while True:
        time.sleep(0.01)


def main(mode: str, directory: str) -> int:
    if mode.startswith("return-"):
        return int(mode.split("-", 1)[1])
    if mode == "raise":
        raise ValueError("main failed on purpose")
    ready = tempfile.mkdtemp()  # not in DIR: the tests list it
    try:
        return run_workers(mode, directory, ready)
    finally:
        shutil.rmtree(ready, ignore_errors=True)


def run_workers(mode: str, directory: str, ready: str) -> int:
    with quiesce.Scope(grace=0.5 if mode != "stubborn" else 30, kill_after=30) as scope:
        if mode == "stubborn":
            scope.process(stubborn, os.path.join(ready, "stubborn"))
            wait_ready(ready, 1)
        else:
            scope.thread(thread_worker, os.path.join(directory, "thread"),
                         os.path.join(ready, "thread"))
            scope.process(process_worker, os.path.join(directory, "process"),
                          os.path.join(ready, "process"))
            marker = os.path.join(directory, "popen")
            scope.popen(["bash", "-c", f"trap 'echo trapped > {marker}; exit 0' TERM; "
                         f": > {os.path.join(ready, 'popen')}; sleep 60 & wait"])
            wait_ready(ready, 3)  # every handler is set, every worker inside its try
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
