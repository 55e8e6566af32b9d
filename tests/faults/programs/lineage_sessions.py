"""A young stranger adopted by a chain member does not defeat the lineage proof,
if its session proves it a stranger (see _proc/_lineage).

This process makes itself a child subreaper (so it is on the chain it
reads). Then, in order: L, a session leader (``setsid sh``); R, the "root",
a child that exits at once; X, started by L's short-lived subshell after R,
so it is young, in L's session, and adopted by this process when the
subshell exits. Prints, one per line:

    with sessions: True       (L is older than R and alive: X is a stranger)
    without sessions: False   (the negative control: X is young and unknown)
    own session: False        (X's session counted as the root's: no proof)
    leader gone: False        (L killed: its number proves nothing any more)
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import time

from quiesce._proc import _lineage, _platform


def ticks() -> int:
    """Now, in the clock ticks since boot that /proc/PID/stat dates processes in."""
    return int(time.clock_gettime(time.CLOCK_BOOTTIME) * os.sysconf("SC_CLK_TCK"))


def strange(pid: int, start: int) -> bool:
    return False  # no process here is a worker of ours


def main() -> None:
    assert _platform.set_child_subreaper()
    leader = subprocess.Popen(
        ["setsid", "sh", "-c", "read go; (sleep 60 & echo $!); exec sleep 60"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert leader.stdin is not None and leader.stdout is not None
    leader_start = _lineage.root_identity(leader.pid)[0]
    while ticks() <= leader_start:  # R must start in a later clock tick than L
        time.sleep(0.005)
    root = subprocess.Popen(["sh", "-c", "exit 0"])
    root_start = _lineage.root_identity(root.pid)[0]
    root.wait()
    leader.stdin.write("go\n")
    leader.stdin.flush()
    stranger = int(leader.stdout.readline())
    pidfd = os.pidfd_open(stranger)
    try:
        while _lineage.root_identity(stranger)[1] != os.getpid():  # adopted by us
            time.sleep(0.005)
        assert _lineage.root_identity(stranger)[0] >= root_start  # young
        mine = (os.getsid(0),)
        for label, sessions in (("with sessions", mine), ("without sessions", None),
                                ("own session", (*mine, os.getsid(stranger)))):
            lineage = _lineage.Lineage(os.getpid())
            assert lineage.complete
            print(f"{label}: {lineage.left_nothing(root.pid, root_start, strange, sessions)}")
        leader.kill()
        leader.wait()
        lineage = _lineage.Lineage(os.getpid())
        print(f"leader gone: {lineage.left_nothing(root.pid, root_start, strange, mine)}")
    finally:
        signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        select.select([pidfd], [], [], 10)
        os.close(pidfd)
        os.waitpid(stranger, 0)  # ours now: reap it
        leader.kill()
        leader.wait()


if __name__ == "__main__":
    main()
