"""The guardian: kills an owner's orphans when the owner dies, even by SIGKILL.

Run as ``python -S -E -s _guardian.py OWNER_PID OWNER_TAG`` by
``_guardian_client.Guardian`` (stdlib only, never imports quiesce: it
starts in ~10 ms and does not depend on the owner's import path). Its stdin
is a socket from the owner carrying lines ``+PGID`` / ``-PGID``: the
process groups of the owner's live workers.

Design note
-----------
Nothing in an owner runs after SIGKILL. PR_SET_PDEATHSIG kills its direct
children, but their children (a ``subprocess`` in a worker, ``sh -c 'x &'``,
a ``setsid`` daemon) are orphaned. This process outlives the owner to end
them: on the owner's death it SIGKILLs every process whose QUIESCE_TAGS
holds ``OWNER_TAG.*`` and every member of the still registered groups,
re-scanning until none is left (at most ``SWEEP_SECONDS``), then exits.

Noticing the death, within ~1 ms on Linux, by any of:
* EOF on stdin: the owner held the only write end (close-on-exec, and the
  client closes it in forked children, but a child forked by C code could
  keep it open, so EOF alone is not enough);
* a pidfd of the owner turning readable (Linux 5.3+);
* ``os.getppid()`` changing, checked every ``POLL_SECONDS`` (portable).
Rejected: PR_SET_PDEATHSIG on the guardian. It fires when the *thread* that
forked us exits, not the owner: SIGKILL would lose the sweep and a
catchable signal would be a false alarm needing the checks above anyway.

Registrations are verified. Stdin is one end of a Unix socket pair, not a
pipe: any process of the owner's uid could open a pipe through
/proc/PID/fd/0 and write ``+PGID``, a socket cannot be opened that way, so
only the owner (or what it hands the fd to) can write. And a group is
accepted only if its leader (the process PGID) descends from the owner,
read from /proc when the line arrives (before and after reading its
session). Lines still unread when the owner dies cannot be checked that
way (its children were re-parented): the socket alone vouches for them.
Off Linux there is no /proc to verify against: the socket alone.

Never a stranger: each candidate is opened (pidfd) *before* its identity is
read again from /proc (still tagged / still in the group with the session
recorded when the group was registered), so a recycled PID fails the check
and a PID recycled after the open makes the signal a no-op. A group id is
only reused once the group is empty, and the session check guards that.
Off Linux (no /proc, no pidfd) only registered groups are swept, via
``ps`` and a pgid+sid re-check just before ``kill``: best effort.

The guardian runs in its own session (no terminal's Ctrl-C reaches it) and
ignores SIGINT, SIGTERM and SIGHUP: a manager signalling a whole cgroup
must not end it before the owner has cleaned up. It ends right after its
sweep, so it never outlives the owner by more than ``SWEEP_SECONDS``.
"""

from __future__ import annotations

import os
import select
import signal
import sys
import time

POLL_SECONDS = 0.05
SWEEP_SECONDS = 3.0
TAGS_KEY = b"QUIESCE_TAGS="
HAS_PROC = os.path.exists("/proc/self/stat")


def read(path: str) -> bytes | None:
    try:
        with open(path, "rb", buffering=0) as f:
            return f.read()
    except OSError:
        return None


def stat(pid: int) -> tuple[bytes, int, int] | None:
    """(state, pgid, sid) of ``pid``, or None."""
    data = read(f"/proc/{pid}/stat")
    fields = data.rpartition(b")")[2].split() if data else []
    if len(fields) < 4:
        return None
    return fields[0], int(fields[2]), int(fields[3])


def tagged(pid: int, tag: bytes) -> bool:
    """Whether QUIESCE_TAGS of ``pid`` holds ``tag`` or ``tag.*``."""
    env = read(f"/proc/{pid}/environ")
    if not env or tag not in env:
        return False
    for entry in env.split(b"\0"):
        if entry.startswith(TAGS_KEY):
            return any(t == tag or t.startswith(tag + b".")
                       for t in entry[len(TAGS_KEY):].split())
    return False


def open_pidfd(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


def ours(pid: int, tag: bytes, groups: dict[int, int]) -> bool:
    st = stat(pid)
    if st is None or st[0] in (b"Z", b"X"):
        return False
    return groups.get(st[1]) == st[2] or tagged(pid, tag)


def sweep_linux(tag: bytes, groups: dict[int, int], spare: set[int]) -> int:
    """SIGKILL every live process of the owner; how many were found."""
    found = 0
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) in spare or not ours(int(name), tag, groups):
            continue
        fd = open_pidfd(int(name))
        if fd is None:
            continue
        try:
            if ours(int(name), tag, groups):  # identity re-checked after the open
                signal.pidfd_send_signal(fd, signal.SIGKILL)
                found += 1
        except OSError:
            pass
        finally:
            os.close(fd)
    return found


def sweep_ps(groups: dict[int, int], spare: set[int]) -> int:
    import subprocess  # only off Linux: keeps the start fast

    try:
        out = subprocess.run(["ps", "-A", "-o", "pid=,pgid="], capture_output=True,
                             timeout=2).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return 0
    found = 0
    for pid, pgid in zip(out[::2], out[1::2], strict=False):
        p = int(pid)
        if p in spare or groups.get(int(pgid)) is None:
            continue
        try:
            if os.getpgid(p) == int(pgid) and os.getsid(p) == groups[int(pgid)]:
                os.kill(p, signal.SIGKILL)
                found += 1
        except OSError:
            pass
    return found


def sweep(tag: str, groups: dict[int, int]) -> None:
    spare = {0, 1, os.getpid(), os.getppid()}
    deadline = time.monotonic() + SWEEP_SECONDS
    while time.monotonic() < deadline:
        found = sweep_linux(tag.encode(), groups, spare) if HAS_PROC else sweep_ps(groups, spare)
        if not found:
            return
        time.sleep(0.005)


def descends_from(pid: int, owner_pid: int) -> bool:
    """Whether ``pid`` is a descendant of ``owner_pid`` (by the parent chain in /proc)."""
    if not HAS_PROC:
        return True  # nothing to read it from (macOS): trusted, see the design note
    for _ in range(64):
        data = read(f"/proc/{pid}/stat")
        fields = data.rpartition(b")")[2].split() if data else []
        if len(fields) < 2 or fields[0] in (b"Z", b"X"):
            return False
        pid = int(fields[1])
        if pid == owner_pid:
            return True
        if pid <= 1:
            return False
    return False


def register(line: bytes, groups: dict[int, int], owner_pid: int, verify: bool = True) -> None:
    try:
        op, pgid = line[:1], int(line[1:])
        if op == b"+" and pgid > 1 and (not verify or descends_from(pgid, owner_pid)):
            sid = os.getsid(pgid)
            if not verify or descends_from(pgid, owner_pid):  # the sid read was our leader's
                groups[pgid] = sid
        elif op == b"-":
            groups.pop(pgid, None)
    except (ValueError, OSError):
        pass  # malformed, or the group's leader is already gone: its tag still finds it


def watch(owner_pid: int, groups: dict[int, int]) -> None:
    """Return when the owner is gone, keeping ``groups`` up to date meanwhile."""
    pidfd = open_pidfd(owner_pid)
    poller = select.poll()
    poller.register(0, select.POLLIN)
    if pidfd is not None:
        poller.register(pidfd, select.POLLIN)
    os.set_blocking(0, False)
    pending = b""
    while os.getppid() == owner_pid:  # checked after the pidfd open: no race
        ready = dict(poller.poll(POLL_SECONDS * 1000))
        if 0 in ready:
            data = read_stdin()
            if data is None:
                break  # EOF: every write end is closed
            *lines, pending = (pending + data).split(b"\n")
            for line in lines:
                register(line, groups, owner_pid)
        if pidfd is not None and pidfd in ready:
            break
    while data := read_stdin():  # registrations sent just before the death
        pending += data
    for line in pending.split(b"\n"):  # too late to verify: the socket vouches for them
        register(line, groups, owner_pid, verify=False)


def read_stdin() -> bytes | None:
    """What the owner wrote so far (b"" for nothing yet); None at EOF."""
    try:
        return os.read(0, 65536) or None
    except BlockingIOError:
        return b""
    except OSError:
        return None


def main(argv: list[str]) -> int:
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)
    try:
        os.setsid()
    except OSError:
        pass  # already a session leader (started with start_new_session)
    os.chdir("/")
    if len(argv) != 3:
        sys.stderr.write("usage: _guardian.py OWNER_PID OWNER_TAG\n")
        return 2
    owner_pid, tag = int(argv[1]), argv[2]
    groups: dict[int, int] = {}
    watch(owner_pid, groups)
    sweep(tag, groups)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
