"""A program that uses quiesce, in a background thread main never joins.

The thread's scope runs a process and a thread that sleep on their tokens;
when main ends, stopping the root token must stop them cooperatively (each
prints ``stopped cooperatively: ...``) long before any grace.
"""

import threading

import quiesce


def sleeper(kind):
    try:
        while not quiesce.stopped():
            quiesce.sleep(10)
    finally:
        print(f"stopped cooperatively: {kind}", flush=True)


def background(ready):
    with quiesce.Scope(grace=30, kill_after=5, name="bg") as scope:
        scope.process(sleeper, "process")
        scope.thread(sleeper, "thread")
        ready.set()
        scope.join()
    print("scope ended", flush=True)


if __name__ == "__main__":
    ready = threading.Event()
    threading.Thread(target=background, args=(ready,), name="background").start()
    ready.wait(30)
    print("main returns", flush=True)
