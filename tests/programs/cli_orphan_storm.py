"""A command that leaves N orphans exiting one by one, SPREAD seconds apart.

argv: N SPREAD LINGER. Each orphan is double-forked (re-parented to the
nearest subreaper) and exits 0.2 + i * SPREAD s after the start, so exits
are spread evenly over N * SPREAD seconds: whatever the phase of a reaper
that polls on a timer, some zombie waits nearly a whole period. The
command itself exits after LINGER seconds.
"""

import os
import sys
import time

if __name__ == "__main__":
    count, spread, linger = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
    start = time.monotonic()
    for i in range(count):
        if os.fork() == 0:
            if os.fork() == 0:
                time.sleep(max(0.0, start + 0.2 + i * spread - time.monotonic()))
            os._exit(0)
        os.waitpid(-1, 0)
    time.sleep(max(0.0, start + linger - time.monotonic()))
