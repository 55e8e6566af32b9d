"""An owner whose bootstrapped child only its lifeline can end (argv: READY_PATH).

The child comes from the fork server, so it is not the owner's child, and
the fork server outlives the owner: a process forked from the owner first
holds the fork server's "alive" pipe open. So at the owner's death no
PDEATHSIG fires, and no guardian runs (no scope): only the child's
lifeline, seeing the owner's sentinel close, can end it. Prints
"ready HELPER_PID CHILD_PID".
"""

import multiprocessing
import multiprocessing.forkserver
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

if __name__ == "__main__":
    from child_targets import bootstrapped_sleeper

    ready = sys.argv[1]
    ctx = multiprocessing.get_context("forkserver")
    multiprocessing.forkserver.ensure_running()
    helper = os.fork()
    if helper == 0:  # keeps the fork server alive after the owner's death
        time.sleep(120)
        os._exit(0)
    child = ctx.Process(target=bootstrapped_sleeper, args=(ready, os.getpid()))
    child.start()
    while not os.path.exists(ready):
        time.sleep(0.01)
    print(f"ready {helper} {child.pid}", flush=True)
    time.sleep(120)
