"""tini test/signals/test.py, rewritten: TERM, USR1, USR2 at their defaults, then a shell
child (``os.system``) that sleeps; the signal must reach the whole group."""

import os
import signal

if __name__ == "__main__":
    for signum in (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(signum, signal.SIG_DFL)
    os.system("sleep 100")
