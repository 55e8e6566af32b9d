"""Did an exited process leave any descendant alive? Asked of its ancestors, not of /proc.

Design note
-----------
After a worker's root exits, ``ProcessHandle`` must find whatever of its
tree outlived it. The general answer is a scan of the whole process table
(stat and environment of every process, ~1 ms per 80 processes), run
twice, because a process caught mid-exec or mid-``setsid`` cannot be
proved in the first. When a scope stops eight workers, sixteen such scans
fight for the GIL: most of the time of a scope's exit.

Most roots leave nothing, and that can be proved from a handful of small
files. The kernel's rule: when a process dies, its live children are
re-parented (before its pidfd turns readable, in ``exit_notify``) to the
nearest *child subreaper* among its ancestors, else to the PID namespace's
init. So once the root has exited, every live descendant of it is either a
descendant of another live descendant, or a direct child of some process
on the root's ancestor chain (its parent: the owner, or the fork server;
then the owner's ancestors up to PID 1). And every descendant started
after the root did. Hence, read after the root's exit:

    no child of any process on the chain started at or after the root
    (this process's own workers aside)  =>  no descendant is alive,

and none can appear later (only a live descendant can make one).

The chain is read nearest first and each process's thread list is read
again after its threads' ``children`` files: a descendant only ever moves
*up* the chain (its reaper died) or to another thread of the same process
(the thread it hung from exited), and either move is then seen.
Processes on the chain are read only if a descendant can land there: the
root's parent (a process made with ``CLONE_PARENT`` is its sibling), then
every ancestor of the owner (which of them are subreapers cannot be read
from /proc), and the owner itself only if it is the parent or a subreaper
(its other threads' children would only add work).

A young child found dead when it is dated (a zombie, or gone: no
process has its number, ``kill(pid, 0)`` says ESRCH) may have died after
the list was read, its children moved here too late to be in it; the
list is read again, and as the death came before that read, the moved
children are in it: the dead child itself is no descendant left alive.
(A child gone before it could be dated was "don't know" until a run
showed the fork server reaping roots during the walk, about one walk in
a hundred, each then paying a full scan.)

Anything uncertain makes the answer "don't know" and the caller falls
back to the full scans: a child listed but unreadable while its number
is taken (hidden from us by ``hidepid``), a chain member or an ancestor
we cannot read (hidden: a chain cut short would miss init), no
``children`` files (kernels without CONFIG_PROC_CHILDREN), a chain that
is not what we expect, a process table that is not ours, no procfs.
The answer is also "don't know" for the first worker started in the same
clock tick (10 ms) as a helper of ours (the guardian, the fork server): a
false alarm costs a scan, never a miss.

Strangers on the chain: init (or a subreaper above us) also adopts the
orphans of unrelated programs, and one started after the root used to
make the proof fail (in a busy container, a third of the walks). A young
child in a session its descendants cannot have is no descendant: a
process's session is inherited at fork or, by ``setsid``, its own PID. So
the root's descendants are in the root's session, the one it was born in
(its parent's, read at the start: a command that is not a group leader
can leave it), or a session led by a descendant. If the session's number
names a process that started before the root and still lives (read after
the walk), that number was never free while the root's tree lived: no
descendant can have made that session. Its leader gone, or younger, or a
session the root can have had: no proof, as before.

What this does not look for: a process that *joined* the worker's group,
or was handed its tag, without descending from it. Neither is made by
the worker's own code; the full scan still runs whenever a descendant
outlived the root.

Cost (a walk is ~190 syscalls with a 6-process chain of 20 threads,
~0.3 ms): each ``children`` file is opened once and read twice through
that fd (``pread`` at offset 0 makes procfs generate it anew; the fd names
the thread itself, so the second read can never show another thread's
list); a chain member listed as another's child is not dated (its death
moves its children up, to a list read after it); stat is read in one
``pread``. Callers make one walk serve many exits (``lineage_since``, and
the process worker holds exits for their stopping siblings).

Rejected: a netlink process-events socket (needs CAP_NET_ADMIN); trusting
the child's own "I had no children" report (another of its threads can
fork between that check and its exit); skipping the second scan (a
setsid'd ``sleep`` escaped that way in CI). Shortcuts that would save more
of each walk, rejected because they lean on kernel internals the proof
need not trust: keeping the ``children`` fds open from one walk to the
next (a thread that died reads as empty, and its number, reused by a new
thread of the same process, would then hide that thread's children);
using the last walk's thread list as this walk's first (sound only
because the kernel hands a moved child to the *first* live thread, so a
thread started since the last walk cannot hold one while an older one
lives); reading only the leader's list (the same reason, and older
kernels hand children to the next thread instead); comparing a first
read with the last walk's second one (a read torn by an exit can skip a
child added since that walk, and still match).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Collection

from quiesce._proc import _platform, _proctree

_TASK_CHILDREN: bool | None = None  # whether /proc/PID/task/TID/children exists here
_MAX_LISTS = 20  # reads of one children list before giving up (processes dying fast)


def _children_files_exist() -> bool:
    """Whether this kernel has CONFIG_PROC_CHILDREN (False without procfs)."""
    global _TASK_CHILDREN
    if _TASK_CHILDREN is None:
        tid = threading.get_native_id()
        _TASK_CHILDREN = os.path.exists(f"/proc/{os.getpid()}/task/{tid}/children")
    return _TASK_CHILDREN


def _read_stat(pid: int) -> bytes | None:
    """/proc/PID/stat in one read (one record, made whole before the first read returns)."""
    try:
        fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        return os.pread(fd, 4096, 0)
    except OSError:
        return None
    finally:
        os.close(fd)


def _read_all(fd: int) -> bytes:
    """The whole file, from its start (procfs generates it anew at offset 0)."""
    chunks = []
    offset = 0
    while chunk := os.pread(fd, 65536, offset):
        chunks.append(chunk)
        offset += len(chunk)
    return b"".join(chunks)


def _read_twice(path: str) -> bytes | None:
    """The file read twice through one fd; None if it cannot be read or the reads differ.

    The fd names the thread itself, not its number: a second read through
    it can never show another thread's list.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        data = _read_all(fd)
        return data if _read_all(fd) == data else None
    except OSError:
        return None
    finally:
        os.close(fd)


def children_of(pid: int) -> list[int] | None:
    """Every child of every thread of ``pid``; [] if it is gone; None if unsure.

    The thread list is read again afterwards: a child of a thread that
    exited meanwhile moved to another thread, maybe one already read. Each
    ``children`` file is read twice, and must read the same: proc(5) calls
    it reliable only while the children are stopped, because the kernel
    walks the list one entry per step, and a child that exits meanwhile can
    make the walk skip its next sibling. Any exit between the two reads
    changes the second list, so an unchanged pair was not such a walk.
    """
    task_dir = f"/proc/{pid}/task"
    for _ in range(5):
        try:
            tids = os.listdir(task_dir)
        except OSError:  # gone: its children moved up the chain, read after it
            return [] if _gone(pid) else None  # else hidden from us (hidepid): unsure
        kids: list[int] = []
        stable = True
        for tid in tids:
            data = _read_twice(f"{task_dir}/{tid}/children")
            if data is None:
                stable = False
                break
            kids.extend(int(p) for p in data.split())
        if stable:
            try:
                if sorted(os.listdir(task_dir)) == sorted(tids):
                    return kids
            except OSError:
                return [] if _gone(pid) else None
    return None


def _gone(pid: int) -> bool:
    """Whether no process (not even a zombie) has the number ``pid`` now. A process
    hidden from our /proc (hidepid) exists: EPERM, not ESRCH."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False


def _start_and_state(pid: int) -> tuple[int, str, int] | None:
    """(start time in clock ticks since boot, state, session) from /proc/PID/stat;
    None if gone."""
    data = _read_stat(pid)
    if not data:
        return None
    fields = data[data.rfind(b")") + 2:].split(maxsplit=20)
    if len(fields) < 20:
        return None
    return int(fields[19]), fields[0].decode(), int(fields[3])


def root_identity(pid: int) -> tuple[int, int, tuple[int, ...] | None]:
    """(start ticks, parent PID, sessions) of ``pid``; (0, 0, None) if unknown.

    Read while ``pid`` is our unreaped child (the number is still its own).
    ``sessions``: those its descendants can have inherited (for
    ``Lineage.left_nothing``): its own now, and its parent's, the one it
    was born in (it may have left it by setsid); None if unreadable.
    """
    data = _read_stat(pid)
    if not data:
        return 0, 0, None
    fields = data[data.rfind(b")") + 2:].split(maxsplit=20)
    if len(fields) < 20:
        return 0, 0, None
    parent = int(fields[1])
    try:
        sessions: tuple[int, ...] | None = (int(fields[3]), os.getsid(parent))
    except OSError:
        sessions = None
    return int(fields[19]), parent, sessions


class Lineage:
    """One read of the children of the chain above a parent, for every root it serves.

    ``children`` maps each child seen to (start ticks, state, session) as
    read after the list that showed it (start -1: gone before it could be
    dated).
    ``complete`` is False when anything was uncertain (see the module note).
    """

    __slots__ = ("_leaders", "chain", "children", "complete", "started", "young_since")

    def __init__(self, parent: int, young_since: int = 0) -> None:
        self.started = time.monotonic()
        self.young_since = young_since  # serves roots started then or later
        self.children: dict[int, tuple[int, str, int]] = {}
        self._leaders: dict[int, int] = {}  # session -> start of the process of that number
        self.chain: list[int] = []
        self.complete = False
        if not _children_files_exist() or not _proctree.process_table_is_ours():
            return
        chain = _chain(parent, os.getpid())
        if chain is None:
            return
        self.chain = chain
        for pid in chain:
            if not self._read_children(pid):
                return
        self.complete = True

    def _read_children(self, pid: int) -> bool:
        """Read ``pid``'s children, again while the last list showed a young child dead.

        A child's state is read after the list that showed it. A young child
        (started since ``young_since``: maybe a descendant) found a zombie, or
        gone, may have died after the list was read, its own children moved
        here too late to be in it: the next list has them. Old children
        cannot descend from the roots, so their deaths do not matter.
        """
        for _ in range(_MAX_LISTS):
            kids = children_of(pid)
            if kids is None:
                return False
            again = False
            for kid in kids:
                if kid in self.children or kid in self.chain:
                    continue  # a member's death moves its children up: to a list read later
                info = _start_and_state(kid)
                if info is None:  # dead and reaped ("X"), or unreadable though it lives
                    info = (-1, "X" if _gone(kid) else "?", 0)
                self.children[kid] = info
                if info[1] in ("Z", "X", "?") and (info[0] < 0 or info[0] >= self.young_since):
                    again = True
            if not again:
                return True
        return False

    def left_nothing(self, root: int, root_start: int, known: Callable[[int, int], bool],
                     sessions: Collection[int] | None = None) -> bool:
        """Whether no live process listed can descend from ``root`` (started ``root_start``).

        ``known(pid, start)`` vouches for processes of our own (other workers).
        ``sessions``: every session ``root``'s descendants can have inherited
        (the root's own, and for a command its parent's: see the module
        note); a young process in another session, whose leader started
        before the root and lives, is then not its descendant.
        """
        if not self.complete or root_start <= 0 or root_start < self.young_since:
            return False
        chain = set(self.chain)
        for pid, (start, state, session) in self.children.items():
            if pid in chain or state in ("Z", "X"):
                continue  # dead: its children were moved before its list was read again
            if start < 0:
                return False  # alive but unreadable (hidden from us): cannot be dated
            if start < root_start:
                continue  # older than the root: cannot descend from it
            if pid == root and start == root_start:
                continue  # the root itself, not yet reaped by its parent
            if known(pid, start):
                continue  # another worker of ours: not a descendant, whatever its state
            if sessions is not None and self._foreign(session, sessions, root_start):
                continue  # a stranger's: e.g. an orphan of someone else's, adopted by init
            return False
        return True

    def _foreign(self, session: int, sessions: Collection[int], root_start: int) -> bool:
        """Whether a session cannot hold the root's descendants: not one they can have
        inherited, and its number still names a process older than the root (read now,
        after the walk: the number was never free while the root's tree lived)."""
        if session <= 0 or session in sessions:
            return False
        if session not in self._leaders:
            info = _start_and_state(session)
            self._leaders[session] = info[0] if info is not None else -1
        leader_start = self._leaders[session]
        return 0 < leader_start < root_start


def _chain(parent: int, me: int) -> list[int] | None:
    """The processes a descendant of a child of ``parent`` can be re-parented to,
    nearest first; None if ``parent`` is not this process or a child of it."""
    ancestors = _ancestors(me)  # me first
    if ancestors is None:
        return None
    if parent == me:
        return ancestors
    if parent not in _our_children:  # checked once: it stays ours while it lives, and
        info = _proctree.stat(parent)  # once dead its orphans are further up the chain
        if info is not None and info[0] != me:
            return None  # not the fork server we started: don't guess
        _our_children.add(parent)
    # The owner gets orphans only as a subreaper or as its namespace's init.
    rest = ancestors if me == 1 or _platform.is_child_subreaper() is not False else ancestors[1:]
    return [parent, *rest]


_ancestors_cache: list[int] | None = None
_our_children: set[int] = set()  # parents (fork servers) seen to be our children


def _ancestors(me: int) -> list[int] | None:
    """This process and its ancestors, nearest first (None: unknown). Cached: the
    chain only loses members (an ancestor dies, its children go further up), so an
    old list holds the new one; a member's PID reused by a stranger only adds work."""
    global _ancestors_cache
    if _ancestors_cache is None or _ancestors_cache[0] != me:
        _ancestors_cache = _read_ancestors(me)
    return _ancestors_cache


def _read_ancestors(me: int) -> list[int] | None:
    """Up to the namespace's init; None if a link cannot be read (an ancestor that
    died meanwhile, or one hidden from us: a chain cut short would miss its top)."""
    result = [me]
    pid = os.getppid()
    while pid > 0 and pid not in result:
        result.append(pid)
        info = _proctree.stat(pid)
        if info is None:
            return None
        pid = info[0]
    return result


_lock = threading.Lock()
_last: dict[int, Lineage] = {}


def lineage_since(parent: int, moment: float, young_since: int) -> Lineage:
    """A ``Lineage`` of ``parent``'s chain begun after ``moment`` (``time.monotonic()``),
    good for roots started at ``young_since`` (clock ticks) or later.

    Shared like ``_proctree.scan_since``: when many workers end at once,
    one read begun after the last exit serves them all (pass the earliest
    start among the roots that may ask, so one read serves each of them).
    """
    with _lock:
        last = _last.get(parent)
        if last is not None and last.started > moment and last.young_since <= young_since:
            return last
        _last[parent] = last = Lineage(parent, young_since)
        return last


def _after_fork_in_child() -> None:
    global _lock, _last, _ancestors_cache, _our_children
    _lock, _last, _ancestors_cache, _our_children = threading.Lock(), {}, None, set()


os.register_at_fork(after_in_child=_after_fork_in_child)
