"""Run as PID 1 of a private PID namespace: hand a reaped worker's PID to a stranger.

``unshare --pid --fork --mount-proc python pid_reuse.py KIND DIR``. PID 1
forks the test and reaps every orphan until the test ends (as an init
would). The test starts a worker of KIND (process, popen, pool, run_command) that
leaves a SIGTERM-ignoring escaper behind (own session, so the worker's
group empties) and exits on its own. Once the worker is reaped, while
quiesce still ends the escaper, the namespace's next PID is set to the
worker's (``ns_last_pid``) and a *stranger* is started there: a session
leader whose group and PID are the worker's old numbers, with a child in
that group. Then the scope (or pool) ends, through the ladder's kill step.

Prints one JSON line: whether the stranger and its child survived, whether
the escaper was ended, and the processes left in the namespace.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from typing import Any

import psutil

import quiesce

KILL_AFTER = 1.5
ESCAPER = "trap '' TERM; echo $$ > {path}; exec sleep 60"


def leave_escaper_and_exit(path: str) -> None:
    """A worker target: an escaper in its own session, then an exit skipping cleanup."""
    subprocess.Popen(["sh", "-c", ESCAPER.format(path=path)], start_new_session=True)
    while not read(path):
        time.sleep(0.01)
    os._exit(0)


def read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return ""


def wait_reaped(pid: int, timeout: float = 10.0) -> None:
    """Until /proc/PID is gone (a zombie still has it): the number is free."""
    deadline = time.monotonic() + timeout
    while os.path.exists(f"/proc/{pid}"):
        if time.monotonic() > deadline:
            raise SystemExit(f"worker {pid} was never reaped")
        time.sleep(0.002)


def stranger_at(pid: int) -> subprocess.Popen[bytes]:
    """A session leader with PID ``pid`` (and a child in its group), by ns_last_pid."""
    for _ in range(50):
        with open("/proc/sys/kernel/ns_last_pid", "w") as f:
            f.write(str(pid - 1))
        proc = subprocess.Popen(["sh", "-c", "sleep 60 & exec sleep 61"],
                                start_new_session=True, env={"PATH": os.environ["PATH"]})
        if proc.pid == pid:
            return proc
        proc.kill()
        proc.wait()
    raise SystemExit(f"could not start a process with PID {pid}")


def stranger_child(stranger: subprocess.Popen[bytes]) -> int:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        children = psutil.Process(stranger.pid).children()
        if children and psutil.Process(stranger.pid).name() == "sleep":
            return children[0].pid
        time.sleep(0.01)
    raise SystemExit("the stranger's child never appeared")


def escaper_pid(path: str) -> int:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if read(path):
            return int(read(path))
        time.sleep(0.01)
    raise SystemExit("the escaper never started")


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def run(kind: str, tmp: str) -> dict[str, object]:
    path = os.path.join(tmp, "escaper")
    if kind == "pool":
        pool = quiesce.ProcessPool(1, grace=0.2, kill_after=KILL_AFTER)
        pool.submit(os.getpid).result()  # the worker runs
        worker_pid = next(p.pid for p in psutil.Process().children()
                          if "_guardian" not in " ".join(p.cmdline()))
        future = pool.submit(leave_escaper_and_exit, path)
        escaper = escaper_pid(path)
        wait_reaped(worker_pid)
        stranger = stranger_at(worker_pid)
        child = stranger_child(stranger)
        try:
            future.result()
        except quiesce.ProcessDied:
            pass
        pool.shutdown()
    elif kind == "run_command":
        run_command_with_a_stranger(tmp, path)
        escaper, stranger, child = FOUND["escaper"], FOUND["stranger"], FOUND["child"]
    else:
        try:
            scope_with_a_stranger(kind, tmp, path)
        except quiesce.ProcessDied:
            pass  # the worker's os._exit: no result
        escaper, stranger, child = FOUND["escaper"], FOUND["stranger"], FOUND["child"]
    return report(escaper, stranger, child)


FOUND: dict[str, Any] = {}


def run_command_with_a_stranger(tmp: str, path: str) -> None:
    """run_command ends the escaper (SIGKILL after grace) after the command's PID went away."""
    script, pid_file = os.path.join(tmp, "escaper.sh"), os.path.join(tmp, "command")
    with open(script, "w") as f:
        f.write(ESCAPER.format(path=path))

    def make_stranger() -> None:
        while not read(pid_file):
            time.sleep(0.01)
        FOUND["escaper"] = escaper_pid(path)
        wait_reaped(int(read(pid_file)))
        FOUND["stranger"] = stranger = stranger_at(int(read(pid_file)))
        FOUND["child"] = stranger_child(stranger)

    helper = threading.Thread(target=make_stranger)
    helper.start()
    quiesce.run_command(["sh", "-c", f"echo $$ > {pid_file}; setsid sh {script} & "
                         f"while [ ! -s {path} ]; do sleep 0.01; done"], grace=KILL_AFTER)
    helper.join()


def scope_with_a_stranger(kind: str, tmp: str, path: str) -> None:
    """The scope ends (ladder up to SIGKILL) after the worker's PID went to a stranger."""
    with quiesce.Scope(grace=0.2, kill_after=KILL_AFTER) as scope:
        if kind == "process":
            worker = scope.process(leave_escaper_and_exit, path)
        else:
            script = os.path.join(tmp, "escaper.sh")
            with open(script, "w") as f:
                f.write(ESCAPER.format(path=path))
            worker = scope.popen(["sh", "-c", f"setsid sh {script} & "
                                  f"while [ ! -s {path} ]; do sleep 0.01; done"])
        FOUND["escaper"] = escaper_pid(path)
        assert worker.pid is not None
        wait_reaped(worker.pid)
        FOUND["stranger"] = stranger = stranger_at(worker.pid)
        FOUND["child"] = stranger_child(stranger)


def report(escaper: int, stranger: subprocess.Popen[bytes], child: int) -> dict[str, Any]:
    time.sleep(0.2)  # deliberate observation window: a late stray signal would land by now
    result = {"stranger": alive(stranger.pid), "stranger_child": alive(child),
              "escaper": alive(escaper)}
    stranger.kill()
    stranger.wait()
    try:
        os.kill(child, 9)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + 10
    while alive(child) and time.monotonic() < deadline:  # our own kills done, then look
        time.sleep(0.002)
    me = os.getpid()
    left = []
    for p in psutil.process_iter(["pid", "cmdline", "status"]):
        if p.pid in (1, me) or p.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        cmd = " ".join(p.info["cmdline"] or [])
        if "_guardian" in cmd or "forkserver" in cmd or "resource_tracker" in cmd:
            continue
        left.append(cmd)
    result["left"] = left
    return result


def main() -> int:
    kind, tmp = sys.argv[1], sys.argv[2]
    if os.getpid() == 1:  # be the namespace's init: run the test in a child, reap all
        child = os.fork()
        if child == 0:
            os._exit(main_child(kind, tmp))
        while True:
            pid, status = os.wait()
            if pid == child:
                return os.waitstatus_to_exitcode(status)
    return main_child(kind, tmp)


def main_child(kind: str, tmp: str) -> int:
    print(json.dumps(run(kind, tmp)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
