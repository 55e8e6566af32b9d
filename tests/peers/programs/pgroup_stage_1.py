"""tini test/pgroup/stage_1.py, rewritten: ignore USR1, start ``sleep 1000`` with USR1 at
its default and wait for it; USR1 to the group ends the sleep, and then us."""

import signal
import subprocess

if __name__ == "__main__":
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    subprocess.Popen(["sleep", "1000"],
                     preexec_fn=lambda: signal.signal(signal.SIGUSR1, signal.SIG_DFL)).wait()
