"""A program using quiesce.aio.run; argv: MODE DIR.

Modes:
  workers   a task, a thread, a process and a popen tree that each write DIR/<name> in
            their finally/trap, then 'ready' on stdout; main awaits for ever
  return-N  amain returns N
  raise     amain raises ValueError
  stubborn  a task that swallows cancellation and a process ignoring SIGTERM; grace 30 s
            (only a 2nd signal ends the program soon)
  stubborn-task  only a task that swallows cancellation; grace 30 s; 'ready' once the
            block is being left (a scope of tasks ends them on the loop: the 2nd signal
            must reach that wait too)
  stuck     asyncio.to_thread(a call that never looks at its token), a task left outside
            every scope that swallows cancellation: the exit is still bounded
  uvloop    like workers, on uvloop (through its event loop policy)
"""

import asyncio
import os
import shutil
import signal
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import quiesce
import quiesce.aio


def write(directory: str, name: str, text: str) -> None:
    with open(os.path.join(directory, name), "w") as f:
        f.write(text)


READY = "AIO_MAIN_READY"  # a directory, not DIR (the tests list that); children inherit it


def mark_ready(name: str) -> None:
    """This worker has its handlers set and is inside its try."""
    with open(os.path.join(os.environ[READY], name), "w"):
        pass


async def wait_ready(count: int) -> None:
    deadline = time.monotonic() + 30
    while len(os.listdir(os.environ[READY])) < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {os.listdir(os.environ[READY])} of {count} workers "
                               "got ready")
        await asyncio.sleep(0.005)


def thread_worker(directory: str) -> None:
    try:
        mark_ready("thread")
        quiesce.sleep(60)
    finally:
        write(directory, "thread", "thread finally")


def process_worker(directory: str) -> None:
    try:
        mark_ready("process")
        while True:
            time.sleep(0.01)  # ignores its token: the ladder's SIGTERM raises Stopped
    finally:
        write(directory, "process", "process finally")


def stubborn_process() -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    mark_ready("stubborn")
    while True:
        time.sleep(0.01)


async def task_worker(directory: str) -> None:
    try:
        mark_ready("task")
        await asyncio.sleep(60)
    finally:
        write(directory, "task", "task finally")


async def swallower(name: str = "swallower") -> None:
    mark_ready(name)
    while True:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            pass


def stuck_call() -> None:
    mark_ready("stuck")
    while True:
        time.sleep(0.01)


def awaiting(task: "asyncio.Task[object]", name: str) -> bool:
    """Whether ``task`` is suspended in a coroutine named ``name`` (down its await chain)."""
    coro: object = task.get_coro()
    while coro is not None:
        code = getattr(coro, "cr_code", None) or getattr(coro, "gi_code", None)
        if code is not None and code.co_name == name:
            return True
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return False


def say_ready_once_awaiting(task: "asyncio.Task[object] | None", name: str) -> None:
    """Print 'ready' once ``task`` waits in ``name`` (checked on the loop every 5 ms)."""
    assert task is not None
    loop = asyncio.get_running_loop()
    deadline = time.monotonic() + 30

    def check() -> None:
        if awaiting(task, name):
            print("ready", flush=True)
        elif time.monotonic() > deadline:
            print(f"never waited in {name}", flush=True)
        else:
            loop.call_later(0.005, check)

    loop.call_soon(check)


async def main(mode: str, directory: str) -> int:
    os.environ[READY] = tempfile.mkdtemp()
    try:
        return await run_workers(mode, directory)
    finally:
        shutil.rmtree(os.environ[READY], ignore_errors=True)


async def run_workers(mode: str, directory: str) -> int:
    if mode.startswith("return-"):
        return int(mode.split("-", 1)[1])
    if mode == "raise":
        raise ValueError("main failed on purpose")
    grace = 30.0 if mode.startswith("stubborn") else 0.5
    async with quiesce.Scope(grace=grace, kill_after=30) as scope:
        if mode == "stubborn":
            scope.task(swallower())
            scope.process(stubborn_process)
            workers = 2
        elif mode == "stubborn-task":
            scope.task(swallower())
            workers = 1
        elif mode == "stuck":
            left_out = asyncio.get_running_loop().create_task(swallower("left-out"))
            scope.task(asyncio.to_thread(stuck_call))
            assert left_out
            workers = 2
        else:
            scope.task(task_worker(directory))
            scope.thread(thread_worker, directory)
            scope.process(process_worker, directory)
            marker = os.path.join(directory, "popen")
            scope.popen(["bash", "-c", f"trap 'echo trapped > {marker}; exit 0' TERM; "
                         f": > {os.path.join(os.environ[READY], 'popen')}; sleep 60 & wait"])
            workers = 4
        await wait_ready(workers)  # every handler is set, every worker inside its try
        if mode == "stubborn-task":
            say_ready_once_awaiting(asyncio.current_task(), "__aexit__")
            return 3  # leaving: the scope waits for the swallower (grace 30 s)
        try:  # before 'ready': the signal may land the moment it is printed
            print("ready", flush=True)
            await asyncio.sleep(60)
        finally:
            write(directory, "main", "main finally")
    return 3


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "uvloop":
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        mode = "workers"
    quiesce.aio.run(main, mode, sys.argv[2] if len(sys.argv) > 2 else ".",
                    grace=1.0, kill_after=1.0)
