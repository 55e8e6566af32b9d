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
        while len(os.listdir(directory)) < 4:
            time.sleep(0.01)
        time.sleep(0.1)
        print("ready", flush=True)
        time.sleep(120)
