"""A ``quiesce.run`` main blocked on a pool task that never ends; waits for SIGTERM.

argv: LIBRARY (quiesce-thread, quiesce-process, stdlib-thread) START_METHOD.
Prints 'ready' once the task runs. With quiesce pools, SIGTERM must end
the program within grace + kill_after; the stdlib pool is the negative
control (its ``__exit__`` waits for the task forever).
"""

import concurrent.futures
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import quiesce

from pool_tasks import ignore_everything, slow


def main(library: str, method: str) -> None:
    pool: concurrent.futures.Executor
    if library == "quiesce-thread":
        pool = quiesce.ThreadPool(2, grace=0.3, kill_after=0.3)
    elif library == "quiesce-process":
        pool = quiesce.ProcessPool(2, grace=0.3, kill_after=0.3, mp_context=method)
    else:
        pool = concurrent.futures.ThreadPoolExecutor(2)
    with pool:
        future: concurrent.futures.Future[object]
        if library == "quiesce-process":
            future = pool.submit(ignore_everything)
        else:
            future = pool.submit(slow, 3600)
        while not future.running():
            time.sleep(0.01)
        print("ready", flush=True)
        future.result()


if __name__ == "__main__":
    quiesce.run(main, sys.argv[1], sys.argv[2], grace=0.3, kill_after=0.3)
