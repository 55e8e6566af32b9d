"""Main leaves a stuck child started some other way (no quiesce import).

argv[1]: ``spawn`` or ``forkserver`` (a multiprocessing.Process of that start
method), or ``process-pool DIR`` (a concurrent.futures.ProcessPoolExecutor
task that never returns, which tells main it runs by a file in DIR: exit
joins the pool, which waits for the task). Prints
``child PID`` for the stuck process, then ``main returns``.
"""

import concurrent.futures
import multiprocessing
import os
import sys
import time


def work(ready_file=None):
    if ready_file is not None:
        with open(ready_file + ".new", "w") as f:
            f.write(str(os.getpid()))
        os.replace(ready_file + ".new", ready_file)  # appears whole
    while True:
        time.sleep(10)


if __name__ == "__main__":
    how = sys.argv[1]
    if how == "process-pool":
        ready_file = os.path.join(sys.argv[2], "running")
        concurrent.futures.ProcessPoolExecutor(1).submit(work, ready_file)
        while not os.path.exists(ready_file):  # the task runs: exit must wait for it
            time.sleep(0.01)
        with open(ready_file) as f:
            pid = int(f.read())
    else:
        child = multiprocessing.get_context(how).Process(target=work, name=f"stuck-{how}")
        child.start()
        pid = child.pid
    print(f"child {pid}", flush=True)
    print("main returns", flush=True)
