"""A command that leaves a setsid'd, double-forked leftover behind and exits 7.

argv: MODE PIDFILE MARKER. The leftover's SIGTERM handler depends on MODE:
``slow`` cleans up for 0.8 s, writes MARKER and exits 0; ``ignore`` ignores
SIGTERM (only SIGKILL ends it). The leftover writes its PID to PIDFILE once
its handler is in place; the command exits as soon as that file exists.
"""

import os
import signal
import sys
import time
from types import FrameType


def _slow_cleanup(signum: int, frame: FrameType | None) -> None:
    time.sleep(0.8)
    with open(sys.argv[3], "w") as f:
        f.write("cleaned\n")
    os._exit(0)


if __name__ == "__main__":
    mode, pidfile = sys.argv[1], sys.argv[2]
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            if mode == "slow":
                signal.signal(signal.SIGTERM, _slow_cleanup)
            else:
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
            with open(pidfile + ".tmp", "w") as f:
                f.write(str(os.getpid()))
            os.rename(pidfile + ".tmp", pidfile)
            while True:
                time.sleep(60)
        os._exit(0)
    os.waitpid(-1, 0)
    while not os.path.exists(pidfile):
        time.sleep(0.01)
    sys.exit(7)
