"""An owner whose scope runs a popen tree (with a setsid escaper), then waits for SIGKILL.

argv: PIDDIR. Prints 'ready' once all 4 levels have written their PIDs.
"""

import os
import sys
import time

import quiesce

DEEP_TREE = os.path.join(os.path.dirname(__file__), "deep_tree.py")

if __name__ == "__main__":
    directory = sys.argv[1]
    with quiesce.Scope() as scope:
        scope.popen([sys.executable, DEEP_TREE, "4", directory, "setsid"])
        levels = [os.path.join(directory, str(level)) for level in range(1, 5)]
        while not all(os.path.exists(p) and os.path.getsize(p) for p in levels):
            time.sleep(0.01)  # every level wrote its PID (the deepest after its setsid)
        print("ready", flush=True)
        time.sleep(120)  # until the test SIGKILLs us
