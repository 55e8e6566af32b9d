"""The seed problem in asyncio, written the usual way: this job never ends.

A child process and an executor thread loop forever. ``main`` returns, but
``asyncio.run`` then waits for the default executor's thread (cancelling
its future cannot stop a call that runs), and the interpreter would join
the child after that; SIGTERM kills it on the spot, no ``finally`` run.
"""

import asyncio
import multiprocessing
import time


def crunch() -> None:
    while True:  # a child process that never looks at any stop request
        time.sleep(0.1)


def poll() -> None:
    while True:  # blocking work handed to a thread, as asyncio.to_thread does
        time.sleep(10)


async def main() -> None:
    multiprocessing.Process(target=crunch).start()
    asyncio.get_running_loop().run_in_executor(None, poll)
    work = asyncio.ensure_future(asyncio.to_thread(poll))
    await asyncio.sleep(0.2)
    work.cancel()  # the awaiting side gives up; the thread runs on
    print("plain asyncio: main() returns now", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
