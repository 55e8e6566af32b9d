"""tini test/pdeathsignal/stage_2.py, rewritten: on SIGUSR1 write "ok" to FILE and exit 0;
meanwhile SIGKILL the supervisor's parent (argv[1])."""

import os
import signal
import sys
import time


def done(signum: int, frame: object) -> None:
    with open(sys.argv[2], "w") as f:
        f.write("ok")
    sys.exit(0)


if __name__ == "__main__":
    signal.signal(signal.SIGUSR1, done)
    os.kill(int(sys.argv[1]), signal.SIGKILL)
    time.sleep(5)
