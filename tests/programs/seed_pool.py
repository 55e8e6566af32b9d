"""The seed's stuck job, as usually written: a pool task that never returns.

argv[1]: ``futures`` (concurrent.futures.ThreadPoolExecutor: the interpreter
joins its threads at exit, so the job hangs) or ``multiprocessing``
(multiprocessing.pool.ThreadPool: its threads are daemons, the job ends).
No quiesce import.
"""

import concurrent.futures
import sys
import time
from multiprocessing.pool import ThreadPool


def never_returns():
    while True:
        time.sleep(0.05)


if __name__ == "__main__":
    if sys.argv[1] == "futures":
        concurrent.futures.ThreadPoolExecutor(2).submit(never_returns)
    else:
        ThreadPool(2).apply_async(never_returns)
    print("main returns", flush=True)
