"""Run the seed problem both ways and show what happens.

1. ``stuck_plain.py`` (multiprocessing + threading, as usually written):
   still running 3 s after its main() returned.
2. ``stuck_quiesce.py``: the scope ends both workers by the ladder and the
   job exits within grace + a fraction of a second, ``finally`` included.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent


def run(script: str, patience: float) -> tuple[float, bool]:
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, str(HERE / script)], start_new_session=True)
    try:
        proc.wait(patience)
        return time.monotonic() - started, True
    except subprocess.TimeoutExpired:
        return time.monotonic() - started, False
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # our own session: nothing else is in it
            proc.wait()


def main() -> int:
    elapsed, ended = run("stuck_plain.py", patience=3.0)
    verdict = "ended" if ended else "STILL RUNNING, hung (demo killed it)"
    print(f"plain job:   {verdict} after {elapsed:.2f} s\n", flush=True)
    elapsed, ended = run("stuck_quiesce.py", patience=30.0)
    verdict = "ended" if ended else "STILL RUNNING"
    print(f"quiesce job: {verdict} after {elapsed:.2f} s", flush=True)
    return 0 if ended else 1


if __name__ == "__main__":
    sys.exit(main())
