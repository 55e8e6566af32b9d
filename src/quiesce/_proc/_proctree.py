"""Find and end a worker's whole process tree without ever signalling a stranger.

A worker's tree is every process that is (a) a descendant of its root by
the parent-PID chain, (b) in its process group, or (c) carries its *tag*
in the environment variable QUIESCE_TAGS. (a) misses processes that were
re-parented when their parent died (double fork); (b) misses those that
called ``setsid``; (c) catches both, as long as they were started by exec
after the tag was set (the tag is inherited through the environment and
read back from /proc/PID/environ). Together they cover daemonising tricks
short of clearing the environment and setsid'ing without exec.

PID reuse: a PID seen in /proc may belong to a new process by the time we
signal it. ``ProcRef`` opens a pidfd first (Linux 5.3+) and only then
re-checks the identity (ancestry, group or tag) through /proc: if the PID
was recycled in between, the check reads the new process and fails; after
it, the pidfd pins the process we checked, and ``pidfd_send_signal`` on a
process that has exited since is a harmless ESRCH. Without pidfd,
psutil's create-time check plays the same role.

Rejected: making the owner a child subreaper (it would inherit and have to
reap every orphan of the user's own subprocesses, stealing exit statuses
from ``subprocess.Popen``); cgroups (need privileges or systemd
delegation, unavailable in most containers and CI).

These functions never reap: the owner of a direct child (Popen,
multiprocessing.Process) needs its exit status.

Imports: psutil is imported on first use, and only off procfs (or for a
process without a pidfd): every quiesce child process imports this module,
and psutil with what it pulls in (datetime, platform, pwd, ...) made up a
sixth of a child's start-up and, at its exit, of the memory the kernel
tears down. Tags are random hex from ``os.urandom``, not ``uuid``, for the
same reason. The lazy import can run in a child's lifeline thread (owner
gone: ``kill_tree``), never right after a fork: an owner imports psutil
with _handle before it starts any process, so a forked child has it.
"""

from __future__ import annotations

import itertools
import os
import signal
import threading
import time
from collections.abc import Mapping
from types import ModuleType
from typing import TYPE_CHECKING

from quiesce._core import _validate
from quiesce._core._fd_wait import wait_readable
from quiesce._core._log import log  # logging imported on first use
from quiesce._proc import _platform

if TYPE_CHECKING:
    import psutil

TAGS_ENV = "QUIESCE_TAGS"
_USE_PROCFS = os.path.isdir("/proc/self")  # else psutil (macOS, BSD)


def _psutil() -> ModuleType:
    """psutil, imported on first use (off procfs, or without pidfd; see the note)."""
    import psutil

    return psutil


def _random_tag() -> str:
    return os.urandom(6).hex()  # 12 hex digits, like the uuid4 prefix it replaced


_owner_tag = _random_tag()
_counter = itertools.count(1)
_counter_lock = threading.Lock()


def owner_tag() -> str:
    """This process's random tag; every tag it hands out starts with it."""
    return _owner_tag


def new_tag() -> str:
    """A tag unique to one worker of this process."""
    with _counter_lock:
        n = next(_counter)
    return f"{_owner_tag}.{n}"


def env_with_tag(tag: str, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """A copy of ``env`` (default: os.environ) with ``tag`` appended to QUIESCE_TAGS."""
    _check_selectors(None, tag, None)
    result = dict(os.environ if env is None else env)
    tags = result.get(TAGS_ENV, "").split()
    if tag not in tags:
        result[TAGS_ENV] = " ".join([*tags, tag])
    return result


def adopt_tag(tag: str) -> None:
    """Tag this process: every process it execs from now on carries ``tag``."""
    os.environ[TAGS_ENV] = env_with_tag(tag)[TAGS_ENV]


def _tag_matches(tags: str, tag: str) -> bool:
    return any(t == tag or t.startswith(tag + ".") for t in tags.split())


def _read_tags(pid: int) -> str:
    if not _USE_PROCFS:
        ps = _psutil()
        try:
            return str(ps.Process(pid).environ().get(TAGS_ENV, ""))
        except (ps.Error, OSError):
            return ""
    data = _read_proc(f"/proc/{pid}/environ", whole=True)
    if data is None:
        return ""
    for entry in data.split(b"\0"):
        if entry.startswith(b"QUIESCE_TAGS="):
            return entry[len(b"QUIESCE_TAGS="):].decode("utf-8", "replace")
    return ""


def _read_proc(path: str, *, whole: bool) -> bytes | None:
    """A /proc file's bytes, or None if it is gone; a plain fd read (a table scan opens
    one per process, and a Python file object costs about twice as much)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        data = os.read(fd, 4096)  # /proc/PID/stat is one short line
        if whole and data:
            chunks = [data]
            while chunk := os.read(fd, 65536):
                chunks.append(chunk)
            data = b"".join(chunks)
        return data
    except OSError:
        return None
    finally:
        os.close(fd)


def _stat(pid: int) -> tuple[int, int, str] | None:
    """(ppid, pgid, state) from /proc/PID/stat (or psutil), or None if gone."""
    if not _USE_PROCFS:
        ps = _psutil()
        try:
            proc = ps.Process(pid)
            state = "Z" if proc.status() == ps.STATUS_ZOMBIE else "R"
            return int(proc.ppid()), os.getpgid(pid), state
        except (ps.Error, OSError):
            return None
    data = _read_proc(f"/proc/{pid}/stat", whole=False)
    if data is None:
        return None
    fields = data[data.rfind(b")") + 2:].split(maxsplit=3)
    return int(fields[1]), int(fields[2]), fields[0].decode()


def _table() -> dict[int, tuple[int, int, str]]:
    """pid -> (ppid, pgid, state) for every process we can see."""
    table: dict[int, tuple[int, int, str]] = {}
    pids = ([int(e) for e in os.listdir("/proc") if e.isdigit()] if _USE_PROCFS
            else _psutil().pids())
    for pid in pids:
        info = _stat(pid)
        if info is not None:
            table[pid] = info
    return table


def start_time(pid: int) -> int:
    """When ``pid`` started, in clock ticks since boot (/proc/PID/stat); 0 if unknown."""
    return start_and_parent(pid)[0]


def start_and_parent(pid: int) -> tuple[int, int]:
    """(start time in clock ticks since boot, parent PID) of ``pid``; (0, 0) if unknown."""
    if not _USE_PROCFS:
        return 0, 0
    data = _read_proc(f"/proc/{pid}/stat", whole=False)
    if data is None:
        return 0, 0
    fields = data[data.rfind(b")") + 2:].split(maxsplit=20)
    return (int(fields[19]), int(fields[1])) if len(fields) > 19 else (0, 0)


class Scan:
    """One read of the process table, shared by every caller that asked for a scan
    begun after some moment (see ``scan_since``); tags are read once per process.

    ``started_at`` keeps each process's start (clock ticks since boot) from
    the same read: a process that started before a worker's root cannot
    carry the worker's tag (a tag is only inherited from the root's own
    descendants), so its environment need not be read for that worker.
    """

    __slots__ = ("_tags", "started", "started_at", "table")

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.table: dict[int, tuple[int, int, str]] = {}
        self.started_at: dict[int, int] = {}
        self._tags: dict[int, str] = {}
        if not _USE_PROCFS:
            self.table = _table()
            return
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            data = _read_proc(f"/proc/{entry}/stat", whole=False)
            if data is None:
                continue
            fields = data[data.rfind(b")") + 2:].split(maxsplit=20)
            pid = int(entry)
            self.table[pid] = (int(fields[1]), int(fields[2]), fields[0].decode())
            if len(fields) > 19:
                self.started_at[pid] = int(fields[19])

    def tags(self, pid: int) -> str:
        """``pid``'s QUIESCE_TAGS, read (after the scan began) at the first ask."""
        tags = self._tags.get(pid)
        if tags is None:
            tags = self._tags[pid] = _read_tags(pid)
        return tags


_scan_lock = threading.Lock()
_last_scan: Scan | None = None


def scan_since(moment: float) -> Scan:
    """A scan of the process table begun after ``moment`` (``time.monotonic()``).

    Scans run one at a time; whoever waited for one that began too early
    runs the next, which serves everyone waiting by then. When a scope
    stops many process workers at once, their monitors all ask at about
    the same time: a couple of scans serve them all, instead of one each
    fighting for the GIL. A scan begun after ``moment`` shows every process
    that was alive at ``moment`` and still is, exactly like a scan of one's own.
    """
    global _last_scan
    with _scan_lock:
        last = _last_scan
        if last is not None and last.started > moment:
            return last
        _last_scan = last = Scan()
        return last


def _ancestors_of_self() -> set[int]:
    result = {os.getpid()}
    pid = os.getppid()
    while pid > 0 and pid not in result:
        result.add(pid)
        info = _stat(pid)
        if info is None:
            break
        pid = info[0]
    return result


class ProcRef:
    """One process, immune to PID reuse (pidfd on Linux, psutil's create time elsewhere)."""

    __slots__ = ("_pidfd", "_proc", "pid")

    def __init__(self, pid: int, pidfd: int | None, proc: psutil.Process | None) -> None:
        self.pid = pid
        self._pidfd = pidfd
        self._proc = proc

    @classmethod
    def open(cls, pid: int) -> ProcRef | None:
        """A reference to live process ``pid``; None if it is gone or a zombie."""
        if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
            raise ValueError(f"pid must be a positive int, not {pid!r}")
        pidfd = _platform.pidfd_open(pid)
        if pidfd is None:
            return cls._open_psutil(pid)
        ref = cls(pid, pidfd, None)
        if not ref.alive():
            ref.close()
            return None
        return ref

    @classmethod
    def _open_psutil(cls, pid: int) -> ProcRef | None:
        """Without pidfd: psutil remembers the create time and checks it before signalling."""
        ps = _psutil()
        try:
            ref = cls(pid, None, ps.Process(pid))
        except ps.Error:
            return None
        return ref if ref.alive() else None

    def send(self, sig: int) -> bool:
        """Signal the process; False if it is already gone (or a zombie). Never raises for that."""
        if not self.alive():
            return False
        if self._pidfd is not None:
            try:
                signal.pidfd_send_signal(self._pidfd, sig)
            except OSError:  # ESRCH: exited since
                return False
            return True
        if self._proc is None:
            return False
        try:
            self._proc.send_signal(sig)
        except (OSError, _psutil().Error):
            return False
        return True

    def alive(self) -> bool:
        """Running (a zombie counts as dead)."""
        if self._pidfd is not None:
            if wait_readable(self._pidfd, 0):
                return False
            info = _stat(self.pid)
            return info is not None and info[2] != "Z"
        if self._proc is None:
            return False
        ps = _psutil()
        try:
            return bool(self._proc.is_running() and self._proc.status() != ps.STATUS_ZOMBIE)
        except ps.Error:
            return False

    def close(self) -> None:
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None

    def __del__(self) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<ProcRef pid={self.pid}>"


def _candidates(table: dict[int, tuple[int, int, str]], root_pid: int | None,
                tag: str | None, pgid: int | None, include_root: bool) -> set[int]:
    found: set[int] = set()
    if root_pid is not None:
        children: dict[int, list[int]] = {}
        for pid, (ppid, _, _) in table.items():
            children.setdefault(ppid, []).append(pid)
        stack = [root_pid]
        while stack:
            for child in children.get(stack.pop(), []):
                if child not in found:
                    found.add(child)
                    stack.append(child)
        if include_root and root_pid in table:
            found.add(root_pid)
    if pgid is not None:
        found.update(pid for pid, (_, group, _) in table.items() if group == pgid)
    if tag is not None:
        found.update(pid for pid in table if _tag_matches(_read_tags(pid), tag))
    if not include_root and root_pid is not None:
        found.discard(root_pid)
    if not include_root and pgid is not None:
        found.discard(pgid)
    return {pid for pid in found if table[pid][2] != "Z"}


def _still_ours(pid: int, root_pid: int | None, tag: str | None, pgid: int | None) -> bool:
    """Re-check identity after the ProcRef was opened (the PID might have been recycled)."""
    info = _stat(pid)
    if info is None:
        return False
    if pgid is not None and info[1] == pgid:
        return True
    if tag is not None and _tag_matches(_read_tags(pid), tag):
        return True
    if root_pid is not None:
        if pid == root_pid:
            return True
        table_pid = pid
        for _ in range(512):  # walk up to the root; stop at init
            parent = _stat(table_pid)
            if parent is None:
                return False
            ppid = parent[0]
            if ppid == root_pid:
                return True
            if ppid <= 1:
                return False
            table_pid = ppid
    return False


def process_table_is_ours() -> bool:
    """Whether /proc (which psutil reads too) numbers processes as our PID namespace does.

    A PID namespace entered without mounting its own /proc (``unshare --pid
    --fork`` without ``--mount-proc``) sees the host's table: every PID in
    it would name a different process here, so nothing read there may be
    signalled.
    """
    if not os.path.isdir("/proc/self"):
        return True  # no procfs: psutil asks the kernel directly (macOS, BSD)
    try:
        return os.readlink("/proc/self") == str(os.getpid())
    except OSError:
        return False


def snapshot(*, root_pid: int | None = None, tag: str | None = None, pgid: int | None = None,
             include_root: bool = True) -> list[ProcRef]:
    """Every live process of the tree, never this process or its ancestors.

    Empty when the process table cannot be trusted (see process_table_is_ours).
    """
    _check_selectors(root_pid, tag, pgid)
    if not process_table_is_ours():
        _warn_foreign_proc()
        return []
    excluded = _ancestors_of_self()
    refs = []
    for pid in sorted(_candidates(_table(), root_pid, tag, pgid, include_root) - excluded):
        ref = ProcRef.open(pid)
        if ref is None:
            continue
        if _still_ours(pid, root_pid, tag, pgid) and ref.alive():
            refs.append(ref)
        else:
            ref.close()
    return refs


def signal_tree(sig: int, *, root_pid: int | None = None, tag: str | None = None,
                pgid: int | None = None, include_root: bool = True) -> int:
    """Signal the whole tree, re-scanning until no new process appears; return the count."""
    signalled: set[int] = set()
    for _ in range(100):  # a fork bomb must not keep us here forever
        fresh = [r for r in snapshot(root_pid=root_pid, tag=tag, pgid=pgid,
                                      include_root=include_root) if r.pid not in signalled]
        if not fresh:
            break
        for ref in fresh:
            if ref.send(sig):
                signalled.add(ref.pid)
            ref.close()
    return len(signalled)


def kill_tree(*, root_pid: int | None = None, tag: str | None = None, pgid: int | None = None,
              include_root: bool = True, timeout: float = 5.0) -> bool:
    """SIGKILL the tree until nothing of it is alive, or ``timeout``; True when empty."""
    timeout = _validate.required_seconds("timeout", timeout)
    deadline = time.monotonic() + timeout
    while True:
        alive = snapshot(root_pid=root_pid, tag=tag, pgid=pgid, include_root=include_root)
        if not alive:
            return True
        for ref in alive:
            ref.send(signal.SIGKILL)
            ref.close()
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.005)


_warned = False


def _warn_foreign_proc() -> None:
    global _warned
    if not _warned:
        _warned = True
        log.warning(
            "quiesce: /proc belongs to another PID namespace (mount one for this namespace, "
            "e.g. unshare --mount-proc); process trees cannot be found, only direct children "
            "and process groups are signalled")


def _check_selectors(root_pid: int | None, tag: str | None, pgid: int | None) -> None:
    if tag is not None and (not isinstance(tag, str) or not tag.strip() or " " in tag):
        raise ValueError(f"tag must be a non-empty word, not {tag!r}")
    if root_pid is None and tag is None and pgid is None:
        raise ValueError("give at least one of root_pid, tag or pgid to select a tree")
    for name, value in (("root_pid", root_pid), ("pgid", pgid)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or value <= 0):
            raise ValueError(f"{name} must be a positive int, not {value!r}")


# For _handle, which proves membership its own way (with held anchors).
tag_matches = _tag_matches
read_tags = _read_tags
stat = _stat
table = _table
ancestors_of_self = _ancestors_of_self


def _after_fork_in_child() -> None:
    global _owner_tag, _counter, _counter_lock, _scan_lock, _last_scan
    _owner_tag = _random_tag()
    _scan_lock, _last_scan = threading.Lock(), None
    _counter = itertools.count(1)
    _counter_lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)
