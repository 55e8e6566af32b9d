"""An owner that keeps quiesce busy until it is SIGKILLed at a random moment.

``scope``: scope after scope, each with two process workers that start
subprocesses (one in the background of a shell), a command with a
background child and a thread; each scope lives 0-0.2 s, so the SIGKILL
lands at any point of a scope's life: starting, running, in the ladder.
``pool``: a ProcessPool of two whose tasks start subprocesses and whose
every third task kills its worker (os._exit), so workers are replaced all
the time. Prints "ready" once the first workers run.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time

import quiesce


def spawner(token: quiesce.StopToken) -> None:
    subprocess.Popen(["sleep", "100"])
    subprocess.Popen(["sh", "-c", "sleep 100 & exit 0"])
    token.wait()


def task(n: int) -> int:
    child = subprocess.Popen(["sh", "-c", "sleep 100 & sleep 100"])
    time.sleep(random.random() * 0.05)
    if n % 3 == 0:
        os._exit(3)  # the worker dies with its tree still running
    child.kill()
    child.wait()
    return n


def scopes() -> None:
    first = True
    while True:
        with quiesce.Scope(grace=0.2, kill_after=0.2) as scope:
            scope.process(spawner)
            scope.process(spawner)
            scope.popen(["sh", "-c", "sleep 100 & sleep 100"])
            scope.thread(lambda token: token.wait())
            if first:
                print("ready", flush=True)
                first = False
            time.sleep(random.random() * 0.2)


def pool() -> None:
    with quiesce.ProcessPool(2, grace=0.2, kill_after=0.2) as p:
        n = 0
        while True:
            futures = [p.submit(task, n + i) for i in range(4)]
            if n == 0:
                print("ready", flush=True)
            n += 4
            for future in futures:
                try:
                    future.result()
                except quiesce.ProcessDied:
                    pass


if __name__ == "__main__":
    scopes() if sys.argv[1] == "scope" else pool()
