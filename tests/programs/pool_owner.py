"""An owner with a busy ProcessPool; argv START_METHOD DIR. Prints worker PIDs, then waits.

Two tasks that never end write their worker's PID to DIR, so both workers
are busy and distinct once two files are there.
"""

import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import quiesce

from pool_tasks import record_pid_and_block

if __name__ == "__main__":
    method, directory = sys.argv[1], sys.argv[2]
    pool = quiesce.ProcessPool(2, mp_context=method)
    busy = [pool.submit(record_pid_and_block, directory) for _ in range(2)]
    deadline = time.monotonic() + 30
    while len(os.listdir(directory)) < 2:
        if time.monotonic() > deadline:
            sys.exit(f"only {os.listdir(directory)} of 2 tasks started")
        time.sleep(0.005)
    print(" ".join(sorted(os.listdir(directory))), flush=True)
    time.sleep(120)  # until the test SIGKILLs us
