"""Run the seed problem both ways and show what happens.

1. ``stuck_plain.py`` (multiprocessing + threading, as usually written):
   still running 3 s after its main() returned.
2. ``stuck_quiesce.py``: the scope ends both workers by the ladder and the
   job exits within grace + a fraction of a second, ``finally`` included.
3. ``stuck_plain.py`` again, unchanged, under ``quiesce run --exit-with-main``:
   when its main code ends, what it left running is ended for it (and named
   on stderr), and the job exits with main's status.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent


def run(script: str, patience: float, wrapper: tuple[str, ...] = ()) -> tuple[float, bool]:
    started = time.monotonic()
    proc = subprocess.Popen([*wrapper, sys.executable, str(HERE / script)],
                            start_new_session=True)
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
    print(f"quiesce job: {verdict} after {elapsed:.2f} s\n", flush=True)
    wrapper = (sys.executable, "-m", "quiesce", "run", "--grace", "1", "--exit-with-main=0.5", "--")
    print("$ quiesce run --grace 1 --exit-with-main=0.5 -- python stuck_plain.py", flush=True)
    elapsed, unchanged_ended = run("stuck_plain.py", patience=30.0, wrapper=wrapper)
    verdict = "ended" if unchanged_ended else "STILL RUNNING"
    print(f"plain job, --exit-with-main: {verdict} after {elapsed:.2f} s", flush=True)
    return 0 if ended and unchanged_ended else 1


if __name__ == "__main__":
    sys.exit(main())
