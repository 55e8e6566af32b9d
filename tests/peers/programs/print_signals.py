"""Print each signal received (1..31 but KILL, STOP, CHLD) on its own line; never exit.

A stand-in for dumb-init's ``testing/print_signals.py``: the first line is
``ready (pid: N)``; only SIGKILL ends it.
"""

import os
import signal
import sys
import time

received: list[int] = []


def note(signum: int, frame: object) -> None:
    received.append(signum)


if __name__ == "__main__":
    for signum in set(range(1, 32)) - {signal.SIGKILL, signal.SIGSTOP, signal.SIGCHLD}:
        signal.signal(signum, note)
    sys.stdout.write(f"ready (pid: {os.getpid()})\n")
    sys.stdout.flush()
    while True:
        while received:
            sys.stdout.write(f"{received.pop(0)}\n")
            sys.stdout.flush()
        time.sleep(0.005)
