"""The supervisor's view of its process tree, read from Linux's /proc.

Design note
-----------
``quiesce run`` is a child subreaper on Linux (PID 1 is one anyway), so
every process its command ever started stays a descendant: either the
supervisor's child or below one, by the parent-PID chain. That chain is all
this module reads; it needs no tag and no psutil (whose import alone costs
more than the supervisor's start-up budget). Off Linux, or as a PID 1 that
sees a foreign /proc, the supervisor uses ``quiesce._proc._proctree``.

Never a stranger: a PID read from /proc can be recycled before it is
signalled. ``signal_each`` opens a pidfd first and then re-reads the
process's parent chain: if the PID was recycled in between, the new process
is not our descendant and is skipped; after the check the pidfd pins the
process, so a signal can reach no one else. Without pidfd (Linux < 5.3)
it falls back to ``kill`` after the same check (a much smaller window).

``tagged`` serves the supervisor's watcher, which runs after the supervisor
died, when the parent chain is gone: it matches the tag that the supervisor
put into the command's environment (QUIESCE_TAGS, inherited by every
descendant that does not clear its environment).

Rejected: the process group alone (a ``setsid`` escapes it); cgroups (need
privileges or systemd delegation).
"""

from __future__ import annotations

import os

from quiesce._cli._launch import TAGS_ENV
from quiesce._cli._signames import sig

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable


def _stat(pid: int) -> tuple[int, int, int, str] | None:
    """(ppid, pgid, sid, state) of ``pid``, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    fields = data.rpartition(b")")[2].split()
    if len(fields) < 4:
        return None
    return int(fields[1]), int(fields[2]), int(fields[3]), fields[0].decode()


def _table() -> dict[int, tuple[int, int, int, str]]:
    table = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _stat(int(entry))
            if stat is not None:
                table[int(entry)] = stat
    return table


def process_table_is_ours() -> bool:
    """Whether /proc numbers processes as our PID namespace does (else its PIDs lie)."""
    try:
        return os.readlink("/proc/self") == str(os.getpid())
    except OSError:
        return False


def descendants(root: int) -> dict[int, int]:
    """Live (not zombie) descendants of ``root``: PID -> process group."""
    table = _table()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    found: dict[int, int] = {}
    stack = list(children.get(root, ()))
    while stack:
        pid = stack.pop()
        if pid in found:
            continue
        _, pgid, _, state = table[pid]
        if state not in ("Z", "X"):
            found[pid] = pgid
        stack.extend(children.get(pid, ()))
    return found


def _is_descendant(pid: int, root: int) -> bool:
    for _ in range(4096):  # deeper than any real tree; ends a loop read mid-change
        stat = _stat(pid)
        if stat is None or stat[3] in ("Z", "X"):
            return False
        if stat[0] == root:
            return True
        if stat[0] <= 1:
            return False
        pid = stat[0]
    return False


def tagged(tag: str) -> list[int]:
    """PIDs whose QUIESCE_TAGS holds ``tag`` (they carry it however far they moved)."""
    needle = f"{TAGS_ENV}=".encode()
    word = tag.encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                env = f.read()
        except OSError:
            continue
        if word not in env:
            continue
        for item in env.split(b"\0"):
            if item.startswith(needle) and word in item[len(needle):].split():
                found.append(int(entry))
                break
    return found


def signal_each(pids: Iterable[int], sig: int, still_ours: Callable[[int], bool]) -> int:
    """Send ``sig`` to each PID that ``still_ours`` vouches for after a pidfd pins it."""
    sent = 0
    for pid in pids:
        fd = _pidfd(pid)
        try:
            if not still_ours(pid):
                continue
            if fd is not None:
                _pidfd_send(fd, sig)
            else:
                os.kill(pid, sig)
            sent += 1
        except OSError:
            continue  # exited since: nothing to do
        finally:
            if fd is not None:
                os.close(fd)
    return sent


def signal_descendants(root: int, sig: int, *, skip_group: int | None = None) -> int:
    """``sig`` to every live descendant of ``root`` (but members of ``skip_group``)."""
    targets = [pid for pid, pgid in descendants(root).items() if pgid != skip_group]
    return signal_each(targets, sig, lambda pid: _is_descendant(pid, root))


def _pidfd(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


def _pidfd_send(fd: int, signum: int) -> None:
    sig.pidfd_send_signal(fd, signum)
