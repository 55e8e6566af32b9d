"""Guardian registrations are verified: no ``+PGID`` gets a stranger's group killed.

Two ways a stranger's group could be registered: another process of the
same uid writing into the guardian's stdin (through /proc/GUARDIAN/fd/0,
which works for a pipe), or the owner registering a group that is not
its own. The first is refused by the channel (a socket cannot be opened
through /proc), the second by the guardian (the leader must descend from
the owner). Each test SIGKILLs the owner and checks that its own group
died (the guardian works) while the stranger lives. Before, an injected
``+PGID`` got the stranger SIGKILLed.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from procs import alive, seconds_until_gone, state, wait_for

OWNER = r"""
import json, subprocess, sys
from quiesce._proc._guardian_client import Guardian
guardian = Guardian.get()
group = subprocess.Popen(["sleep", "100"], process_group=0)
guardian.watch_group(group.pid)
guardian.watch_group(int(sys.argv[1]))  # not ours: must be refused
guardian.watch_group(group.pid)  # after it: the line above was read by now
print(json.dumps({"guardian": guardian.pid, "group": group.pid}), flush=True)
sys.stdin.readline()
"""


def _owner_dies_with(stranger: subprocess.Popen[bytes], register_stranger: bool,
                     inject: bool) -> bool:
    """SIGKILL an owner (after the given attempts); whether the stranger survived."""
    owner = subprocess.Popen([sys.executable, "-c", OWNER,
                              str(stranger.pid if register_stranger else 2 ** 22 + 1)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert owner.stdout is not None
        info = json.loads(owner.stdout.readline())
        _wait_until_watching(info["guardian"])
        if inject:
            with pytest.raises(OSError) as refused:
                os.open(f"/proc/{info['guardian']}/fd/0", os.O_WRONLY)
            assert refused.value.errno == errno.ENXIO  # a socket: no way in through /proc
        owner.send_signal(signal.SIGKILL)
        owner.wait(10)
        _, left = seconds_until_gone([info["group"]])
        assert left == [], "the owner's own group was not ended (the guardian is broken)"
        seconds_until_gone([info["guardian"]])  # its sweep is over
        return alive(stranger.pid)
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait()


def _unread(pid: int, fd: int) -> int | None:
    """Bytes waiting in the receive queue of socket ``fd`` of ``pid`` (by ``ss``), or None
    if that cannot be told."""
    try:
        out = subprocess.run(["ss", "-xHp"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    for line in out.splitlines():
        if f"pid={pid},fd={fd})" in line or f"pid={pid},fd={fd}," in line:
            return int(line.split()[2])  # Netid State Recv-Q Send-Q ...
    return None


def _wait_until_watching(guardian: int) -> None:
    """Until the guardian waits on the owner's pidfd and has read every line the owner
    sent (lines read only after the owner's death cannot be checked against its tree
    any more, and are trusted: only the owner holds the socket)."""
    def has_pidfd() -> bool:
        try:
            return any("pidfd" in os.readlink(f"/proc/{guardian}/fd/{fd}")
                       for fd in os.listdir(f"/proc/{guardian}/fd"))
        except OSError:
            return False

    wait_for(has_pidfd, "the guardian to open the owner's pidfd", timeout=10)
    if _unread(guardian, 0) is None:  # no ss here: it polls stdin every 50 ms at most
        time.sleep(0.3)
        return
    # Nothing left unread on its socket, and it sleeps (back in poll): every line was read.
    wait_for(lambda: _unread(guardian, 0) == 0 and state(guardian) == "S",
             "the guardian to read the owner's lines", timeout=10)


@pytest.mark.parametrize("how", ["injected", "registered-by-the-owner"])
def test_a_strangers_group_is_never_swept(how: str) -> None:
    stranger = subprocess.Popen(["sleep", "100"], process_group=0)
    try:
        assert _owner_dies_with(stranger, register_stranger=how != "injected",
                                inject=how == "injected")
    finally:
        stranger.kill()
        stranger.wait()
