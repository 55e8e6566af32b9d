"""Negative control for the reaping test: a subreaper that never reaps.

argv: SECONDS CMD... — starts CMD, then only sleeps; orphans re-parented
to it stay zombies. Prints its PID first.
"""

import os
import subprocess
import sys
import time

from quiesce._proc._platform import set_child_subreaper

if __name__ == "__main__":
    assert set_child_subreaper()
    print(os.getpid(), flush=True)
    proc = subprocess.Popen(sys.argv[2:])
    time.sleep(float(sys.argv[1]))
    proc.wait()
    while True:  # reap now, so the test leaves nothing behind
        try:
            os.wait()
        except ChildProcessError:
            break
