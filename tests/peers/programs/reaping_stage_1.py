"""tini test/reaping/stage_1.py, rewritten: start reaping_stage_2 (which orphans 100
short sleeps), then wait until our supervisor's only descendant is us and no zombie is
left in our process group. Exit 0 on success, 1 if that does not happen within
argv[1] seconds (default 10)."""

import os
import subprocess
import sys
import time

import psutil

if __name__ == "__main__":
    here = os.path.dirname(os.path.abspath(__file__))
    subprocess.Popen([sys.executable, os.path.join(here, "reaping_stage_2.py")]).wait()
    me = psutil.Process()
    supervisor = me.parent()
    assert supervisor is not None
    print(f"stage_1 is PID {me.pid}, the supervisor PID {supervisor.pid}", flush=True)
    deadline = time.monotonic() + (float(sys.argv[1]) if len(sys.argv) > 1 else 10.0)
    while True:
        pids = {p.pid for p in supervisor.children(recursive=True)}
        if pids == {me.pid}:
            break
        if time.monotonic() > deadline:
            print(f"still there: {sorted(pids - {me.pid})}", flush=True)
            sys.exit(1)
        time.sleep(0.1)
    for proc in psutil.process_iter():
        try:
            if proc.pid != me.pid and os.getpgid(proc.pid) == os.getpgid(0):
                print(f"not reaped: {proc.pid} {proc.name()}", flush=True)
                sys.exit(1)
        except (OSError, psutil.Error):
            continue
    sys.exit(0)
