"""The same asyncio job with quiesce.aio: it ends, promptly and cleanly.

The scope owns the child process (token, then SIGTERM raising ``Stopped``
so ``finally`` runs, then SIGKILL) and a task; ``quiesce.aio.to_thread``
and plain ``asyncio.to_thread`` calls sleep on their own token, which a
cancel or the end of ``quiesce.aio.run`` stops, so they wake at once.
"""

import asyncio
import time

import quiesce
import quiesce.aio


def crunch() -> None:
    try:
        while True:  # ignores its token: the ladder's SIGTERM ends it
            time.sleep(0.1)
    finally:
        print("quiesce: child process ran its finally", flush=True)


def poll() -> None:
    while True:
        quiesce.sleep(10)  # wakes at once on stop (raises Stopped)


async def heartbeat() -> None:
    while True:
        await asyncio.sleep(0.05)


async def main() -> int:
    async with quiesce.Scope(grace=0.5, kill_after=1.0, name="job") as scope:
        scope.process(crunch)
        scope.task(heartbeat())
        scope.task(quiesce.aio.to_thread(poll))
        asyncio.get_running_loop().run_in_executor(None, poll)  # nobody awaits it
        await asyncio.sleep(0.2)
        print("quiesce: main() returns now", flush=True)
    for line in scope.report():
        print(f"quiesce: {line}", flush=True)
    return 0


if __name__ == "__main__":
    quiesce.aio.run(main, grace=0.5, kill_after=1.0)
