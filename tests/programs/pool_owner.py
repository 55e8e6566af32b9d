"""An owner with a busy ProcessPool; argv START_METHOD. Prints worker PIDs, then waits."""

import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import quiesce

from pool_tasks import pid_after, slow

if __name__ == "__main__":
    pool = quiesce.ProcessPool(2, mp_context=sys.argv[1])
    pids = {f.result() for f in [pool.submit(pid_after, 0.3) for _ in range(2)]}
    busy = [pool.submit(slow, 100) for _ in range(2)]
    time.sleep(0.3)
    print(" ".join(map(str, sorted(pids))), flush=True)
    time.sleep(120)
