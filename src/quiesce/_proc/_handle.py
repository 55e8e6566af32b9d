"""ProcessHandle: one child process's whole life, and never a signal to a stranger.

Launch -> own process group -> pidfd -> guardian registration -> (monitor:
``exit_fd``, ``wait_exited``) -> ``left_nothing`` -> ``reap`` (or
``try_reap``) -> ``end_remains`` -> ``close`` (unregister). The scope's
process and popen workers and the ProcessPool's workers all go through it,
so the rules below hold everywhere.

After the root's exit, ``left_nothing`` proves from the children lists of
the root's ancestors that no descendant is alive (see _lineage); then the
/proc scans of ``reap`` and ``end_remains`` (below) are skipped. When it
cannot prove it, they run as before.

Design note: how each signal proves its target is ours
------------------------------------------------------
A PID or a group number is only a name; the kernel hands it to a new
process once the old one is reaped (a group number once no process uses
it). So nothing here signals a bare number:

* **The root**: through its pidfd, which names the process itself: after
  the exit it is a harmless ESRCH, whatever now owns the number. Without
  pidfd (macOS, Linux < 5.3): for a command, ``os.kill`` under Popen's wait
  lock while it is unreaped (an unreaped child's PID cannot be reused);
  for a multiprocessing child (reaped behind our back by the fork server,
  or under fork by a ``waitpid(-1)`` of the program's own), psutil's
  create-time check.
* **The group** (number = root PID): ``killpg`` only for a command, under
  Popen's wait lock while the leader is unreaped (the leader pins the
  number, and only it could have made that group). Otherwise member by
  member, as below.
* **Any other process** (descendant, group member, tagged escaper): a
  pidfd is opened first, *then* its identity is read again from /proc and
  proved by one of: it carries our tag; its parent is the root or a held
  member, and that parent is still alive *after* the read (so the parent
  PID read was that process's, not a recycled one); it is in our group,
  and the root or a held member of the group is alive after the read (the
  group number cannot have been freed in between). Proved processes are
  *held* (their pidfds kept until ``close``) and anchor the next proofs,
  so what the root started stays provable after the root is reaped.
  Before reaping, the members are collected and held while the root still
  pins the group.

Ending a tree (``kill_tree``): the root is SIGSTOPped, then every proved
member, round after round until a round finds nothing new (a stopped
process cannot fork, so this converges even for fork bombs); then SIGKILL,
members first and the root last. A quiesce worker process is a child
subreaper (see _child), so an orphan of a member re-parents to the stopped
root and is still found by descent, even after ``setsid`` without exec.

Remaining limits (see docs/architecture.md): a process of ours that joins
a stranger's group makes that group look like ours; a descendant that
escapes with setsid, without exec, *after* its worker process exited on
its own is out of reach (no tag in /proc/PID/environ, no ancestry left)
unless the worker's bootstrap ended it first; off Linux, members are
proved through psutil's create-time check, not a pidfd.

Rejected: cgroups (privileges or systemd delegation); making the owner a
subreaper (it would have to reap the orphans of the user's own
subprocesses and could steal exit statuses from ``subprocess.Popen``).
"""

from __future__ import annotations

import contextlib
import multiprocessing.process
import os
import signal
import subprocess
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from typing import Any, final

import psutil

from quiesce._core._fd_wait import wait_readable
from quiesce._proc import _command, _launcher, _lineage, _platform, _proctree
from quiesce._proc._guardian_client import Guardian

POLL = 0.02  # how often end_remains looks at what is left
KILL_TIMEOUT = 5.0  # how long kill_tree goes on finding and killing members
_MAX_ROUNDS = 200  # rounds of discovery in one kill (a fork bomb is stopped long before)


@final
class ProcessHandle:
    """Owns one child process from its start to its end; use ``start_process``/``start_command``.

    Every method is safe from any thread and at any time, before or after
    the child exited or was reaped: none can signal a process that is not
    the child or a process proved to descend from it (see the module note).

    Example::

        handle = ProcessHandle.start_command("demo", ["sleep", "10"], _proctree.new_tag(), {})
        handle.signal(signal.SIGTERM)
        handle.wait_exited()
        code = handle.reap()
        handle.end_remains(kill_after=2.0)
        handle.close()
    """

    def __init__(self, pid: int, tag: str, *, reap: Callable[[bool], int | None],
                 reap_lock: Any, unreaped: Callable[[], bool], pins: bool,
                 sentinel: Any = None) -> None:
        """Private: the child must be ours and unreaped (use the ``start_*`` class methods).

        ``pins``: whether "unreaped" (our own wait not yet done, checked
        under ``reap_lock``) proves the PID is still the child's. Else the
        root is proved by its pidfd, or off Linux by psutil's create time.
        """
        self.pid = pid
        self.tag = tag
        self.exitcode: int | None = None
        self._reap_fn = reap
        self._reap_lock = reap_lock
        self._unreaped = unreaped
        self._sentinel = sentinel
        self._pidfd = _platform.pidfd_open(pid)  # unreaped: the PID is still our child's
        # Read while the PID is still the child's: only a process started since can carry
        # its tag (0, unknown: every process's tags are read). The parent (us, or the fork
        # server) heads the chain _lineage reads after the exit; the sessions, see there.
        self._root_start, self._root_parent, self._root_sessions = (
            _lineage.root_identity(pid) if self._pidfd is not None else (0, 0, None))
        if self._pidfd is not None and wait_readable(self._pidfd, 0):
            self._root_start, self._root_parent = 0, 0  # exited: the read may be a stranger's
        if self._root_start:
            _open_roots[pid] = self._root_start
        self._fd_lock = threading.Lock()  # close() never pulls the pidfd from under a signal
        self._pins = pins
        # Without a pidfd, psutil remembers the create time and checks it before a signal.
        self._ps: psutil.Process | None = None
        if self._pidfd is None:
            with contextlib.suppress(psutil.Error):
                self._ps = psutil.Process(pid)
        self._held: dict[int, _proctree.ProcRef] = {}
        self._held_lock = threading.Lock()
        self._reaped = False
        self._nothing_left = False  # proved after the exit: the root left no descendant
        self._held_once = False  # try_reap's scan before the reap, done once
        self._closed = False
        self._registered = False

    # -- starting ---------------------------------------------------------------
    @classmethod
    def start_process(cls, process: multiprocessing.process.BaseProcess,
                      tag: str) -> ProcessHandle:
        """Start a (not yet started) multiprocessing process from the launcher thread.

        Its bootstrap (``_child.prepare_child``) must put it in a group of
        its own; this also tries from the parent side, whichever runs first.

        Raises whatever ``process.start()`` raises (e.g. OSError EAGAIN).
        """
        if getattr(process, "_start_method", None) == "fork":
            # A forked child inherits the import lock of any module another thread is
            # importing at that instant, held for ever. multiprocessing's resource sharer
            # thread imports hmac lazily (on its first fd handed to a child), and the
            # child then imports it too: import it here first, before any fork. (If it
            # cannot be imported, the child cannot import it either: nothing to guard.)
            with contextlib.suppress(ImportError):
                import hmac  # noqa: F401
        _launcher.launch(process.start)
        _unlist(process)
        pid = process.pid
        assert pid is not None
        lock = threading.Lock()
        state = {"reaped": False}

        def reap(block: bool = True) -> int | None:
            with lock:  # signal() checks "unreaped" under the same lock
                if not block and process.exitcode is None:  # a non-blocking poll
                    raise _NotYet
                process.join()
                code = process.exitcode
                if code is None:
                    code = _status_taken_by_another_thread(process)
                state["reaped"] = True
            if code is not None:
                process.close()  # it raises while it knows no status
            return code

        try:
            os.setpgid(pid, pid)
        except OSError:
            pass  # the child did it first (or exec'd: spawn); it does it itself anyway
        handle = None
        try:
            # Never pins: the fork server reaps its children itself, and under fork
            # another thread's Process.start() may have polled (reaped) it in the
            # instant before _unlist, or the program may waitpid(-1).
            handle = cls(pid, tag, reap=reap, reap_lock=lock,
                         unreaped=lambda: not state["reaped"], pins=False,
                         sentinel=process.sentinel)
            handle._register(always=True)
        except BaseException:  # e.g. the guardian cannot start: the child must not run on
            if handle is not None:
                handle.kill_tree()
                handle.reap()
                handle.close()
            else:
                process.kill()  # just started, not yet reaped by anyone
                process.join()
            raise
        return handle

    @classmethod
    def start_command(cls, caller: str, argv: _command.Argv, tag: str,
                      kwargs: dict[str, Any]) -> tuple[ProcessHandle, subprocess.Popen[Any]]:
        """``subprocess.Popen`` in its own process group, tagged; returns (handle, popen).

        The Popen is the user's for its pipes; a ``wait()``/``poll()`` made
        on it reaps under Popen's own lock, which the handle takes too.

        Raises the errors of ``_command.popen`` (argv checks, command not found).
        """
        proc = _command.popen(caller, argv, tag, kwargs)
        # Popen serialises its own waitpid calls under this lock: holding it, we know
        # whether the child was reaped, even if the user waits on it in another thread.
        lock = getattr(proc, "_waitpid_lock", None) or threading.Lock()

        def reap(block: bool = True) -> int | None:
            if not block and proc.poll() is None:
                raise _NotYet
            return proc.wait()

        handle = cls(proc.pid, tag, reap=reap, reap_lock=lock,
                     unreaped=lambda: proc.returncode is None, pins=True)
        handle._register(always=False)
        return handle, proc

    def _register(self, *, always: bool) -> None:
        """Tell the guardian about the group (unless the caller put the root in another)."""
        if always or _leads_group(self.pid):
            Guardian.get().watch_group(self.pid)
            self._registered = True

    # -- watching -----------------------------------------------------------------
    @property
    def exit_fd(self) -> Any:
        """Something to select on that turns readable at the exit: the pidfd, else the sentinel."""
        return self._pidfd if self._pidfd is not None else self._sentinel

    @property
    def has_pidfd(self) -> bool:
        return self._pidfd is not None

    def has_exited(self) -> bool:
        """Whether the root has exited (without reaping it)."""
        with self._fd_lock:
            if self._pidfd is not None:
                return wait_readable(self._pidfd, 0)
            if self._closed:
                return True
        if self._pins:
            with self._locked(None) as got:
                if not got or not self._unreaped():
                    return True
                return _exited_unreaped(self.pid)
        return not self._root_alive()

    def wait_exited(self, timeout: float | None = None) -> bool:
        """Block until the root has exited (not reaped); False if ``timeout`` passed first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.has_exited():
            remaining = 3600.0 if deadline is None else deadline - time.monotonic()
            if remaining <= 0:
                return False
            remaining = min(remaining, 3600.0)
            fd = self._pidfd
            if fd is not None and not self._closed:
                wait_readable(fd, remaining)
            else:
                time.sleep(min(0.05, remaining))
        return True

    # -- signals -------------------------------------------------------------------
    def signal(self, sig: int) -> bool:
        """Signal the root alone; False once it is reaped (never another process).

        Until the reap it may be a zombie: still ours, and the signal harmless.
        """
        with self._fd_lock:
            if self._pidfd is not None:
                try:
                    signal.pidfd_send_signal(self._pidfd, sig)
                    return True
                except OSError:
                    return False
            if self._closed:
                return False
        if self._pins:
            with self._locked(0.5) as got:
                if got and self._unreaped():
                    try:
                        os.kill(self.pid, sig)
                        return True
                    except OSError:
                        return False
        if self._ps is not None and self._root_alive():
            try:
                self._ps.send_signal(sig)  # checks the create time first
                return True
            except psutil.Error:
                return False
        return False

    def signal_group(self, sig: int) -> None:
        """Signal the root's process group (and nothing else): ``killpg`` while the
        leader is unreaped, else each proved member. A stopped member is continued
        after any catchable signal, so it handles it within the grace."""
        with self._locked(0.1) as got:
            if got and self._pins and self._unreaped() and not self._closed:
                _command.signal_group(self.pid, sig)
                if _wakes(sig):
                    _command.signal_group(self.pid, signal.SIGCONT)
                return
        for ref in self._discover(group_only=True):
            if ref.send(sig) and _wakes(sig):
                ref.send(signal.SIGCONT)

    def signal_tree(self, sig: int, *, include_root: bool = True) -> int:
        """Signal the root (optionally) and every proved member; how many were signalled.

        A stopped process is continued after any catchable signal (see signal_group).
        """
        count = 0
        if include_root and self.signal(sig):
            count = 1
            if _wakes(sig):
                self.signal(signal.SIGCONT)
        seen: set[int] = set()
        for _ in range(_MAX_ROUNDS):
            fresh = [r for r in self._discover() if r.pid not in seen]
            if not fresh:
                break
            for ref in fresh:
                seen.add(ref.pid)
                if ref.send(sig):
                    count += 1
                    if _wakes(sig):
                        ref.send(signal.SIGCONT)
        return count

    def kill_tree(self, *, timeout: float = KILL_TIMEOUT) -> bool:
        """Stop the root and every member (SIGSTOP), then SIGKILL members and the root last.

        Returns True once nothing of the tree is alive, False if ``timeout`` passed first.
        """
        deadline = time.monotonic() + timeout
        self.signal(signal.SIGSTOP)
        while True:
            stopped: set[int] = set()
            for _ in range(_MAX_ROUNDS):  # a stopped process cannot fork: this converges
                fresh = [r for r in self._discover() if r.pid not in stopped]
                if not fresh or time.monotonic() >= deadline:
                    break
                for ref in fresh:
                    ref.send(signal.SIGSTOP)
                    stopped.add(ref.pid)
            for ref in self._live_held():
                ref.send(signal.SIGKILL)
            self.signal(signal.SIGKILL)
            if not self._discover() or time.monotonic() >= deadline:
                return not self._discover()
            time.sleep(0.005)

    # -- the end ---------------------------------------------------------------------
    def reap(self) -> int | None:
        """Collect the exit status (blocks until the exit); the members are held first."""
        if self._reaped:
            return self.exitcode
        if not self.left_nothing(time.monotonic()):
            self._discover()  # the root still pins its group: hold what is in it
        # end_remains scans again even when this found nothing: a process caught
        # mid-exec or mid-setsid (environ unreadable, parent and group already
        # changed) is unprovable here and provable a moment later.
        self.exitcode = self._reap_fn(True)
        self._reaped = True
        return self.exitcode

    def try_reap(self) -> bool:
        """Reap without blocking, if the exit status is there; True once reaped.

        Call after the exit (``exit_fd`` readable) and after ``left_nothing``
        (else the members are held first, by a scan). Under the fork server
        the status comes a moment after the exit: wait for ``reap_fd``.
        """
        if self._reaped:
            return True
        if not self._nothing_left and not self._held_once:
            self._held_once = True
            self._discover()  # the root still pins its group: hold what is in it
        try:
            self.exitcode = self._reap_fn(False)
        except _NotYet:
            return False
        self._reaped = True
        return True

    @property
    def reap_fd(self) -> Any:
        """What turns readable when ``try_reap`` can succeed (a process's sentinel), or None."""
        return self._sentinel

    def left_nothing(self, since: float) -> bool:
        """After the root's exit, seen before ``since`` (``time.monotonic()``): whether it
        provably left no descendant alive (see _lineage). If so, neither ``reap`` nor
        ``end_remains`` scans /proc. False when unsure; then they scan as usual.
        """
        if self._nothing_left:
            return True
        if self._root_start <= 0 or self._closed or self._reaped or not self.has_exited():
            return False
        # Dated from the earliest open root: one read serves every worker ending now.
        young_since = min(_open_roots.values(), default=self._root_start)
        lineage = _lineage.lineage_since(self._root_parent, since,
                                         min(young_since, self._root_start))
        self._nothing_left = lineage.left_nothing(self.pid, self._root_start, _is_open_root,
                                                  self._root_sessions)
        return self._nothing_left

    def remains(self) -> list[_proctree.ProcRef]:
        """The live, proved members of the tree (not the root)."""
        return self._discover()

    def end_remains(self, *, kill_after: float,
                    kill_now: Callable[[], bool] = lambda: False) -> None:
        """SIGTERM what outlived the root; SIGKILL it after ``kill_after`` or at ``kill_now()``."""
        if self._nothing_left or not self._discover():
            return
        if not kill_now():
            self.signal_tree(signal.SIGTERM, include_root=False)
            deadline = time.monotonic() + kill_after
            while time.monotonic() < deadline and not kill_now():
                if not self._discover():
                    return
                time.sleep(POLL)
        self.kill_tree()

    def close(self) -> None:
        """Unregister from the guardian and release every fd (idempotent)."""
        if self._closed:
            return
        self._closed = True
        if _open_roots.get(self.pid) == self._root_start:
            del _open_roots[self.pid]
        if self._registered:
            Guardian.get().unwatch_group(self.pid)
        with self._fd_lock:
            if self._pidfd is not None:
                os.close(self._pidfd)
                self._pidfd = None
        with self._held_lock:
            self._held = {}  # each ProcRef closes its pidfd when its last user drops it

    def __repr__(self) -> str:
        return f"<ProcessHandle pid={self.pid} exitcode={self.exitcode}>"

    # -- proofs ----------------------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self, timeout: float | None) -> Iterator[bool]:
        got = self._reap_lock.acquire(timeout=-1 if timeout is None else timeout)
        try:
            yield got
        finally:
            if got:
                self._reap_lock.release()

    def _root_alive(self) -> bool:
        """Whether the root still pins its PID and group number (checked after a read)."""
        with self._fd_lock:
            if self._pidfd is not None:
                return not wait_readable(self._pidfd, 0)
            if self._closed:
                return False
        if self._pins:
            with self._locked(0.1) as got:
                if got and self._unreaped():
                    return True
        try:
            return (self._ps is not None and self._ps.is_running()
                    and self._ps.status() != psutil.STATUS_ZOMBIE)
        except psutil.Error:
            return False

    def _live_held(self) -> list[_proctree.ProcRef]:
        with self._held_lock:
            return [r for r in self._held.values() if r.alive()]

    def _discover(self, *, group_only: bool = False) -> list[_proctree.ProcRef]:
        """Every live member proved ours now (held from then on), the root excluded."""
        if self._closed or not _proctree.process_table_is_ours():
            return []
        excluded = _proctree.ancestors_of_self() | {self.pid}
        for _ in range(10):  # again while a pass finds new parents (their children next)
            if not self._discover_pass(excluded, group_only):
                break
        found = self._live_held()
        if group_only:
            found = [r for r in found if (_proctree.stat(r.pid) or (0, 0, ""))[1] == self.pid]
        return found

    def _discover_pass(self, excluded: set[int], group_only: bool) -> bool:
        """One scan of the process table (begun after this call: shared, see
        ``scan_since``); True if it proved a new member."""
        started = time.monotonic()
        with self._held_lock:
            for pid in [p for p, r in self._held.items() if not r.alive()]:
                del self._held[pid]  # dead: anchors nothing; its fd goes with the last user
            held = dict(self._held)
        parents = {self.pid, *held}
        added = False
        scan = _proctree.scan_since(started)
        started_at, root_start = scan.started_at, self._root_start
        for pid, (ppid, pgid, state) in scan.table.items():
            if pid in excluded or pid in held or state == "Z":
                continue
            if group_only and pgid != self.pid:
                continue
            if not (ppid in parents or pgid == self.pid or (
                    not group_only and started_at.get(pid, root_start) >= root_start
                    and (tags := scan.tags(pid)) and _proctree.tag_matches(tags, self.tag))):
                continue
            ref = _proctree.ProcRef.open(pid)
            if ref is None:
                continue
            if self._proves(pid, held, group_only):
                held[pid] = ref
                parents.add(pid)
                added = True
                with self._held_lock:
                    if self._closed:
                        ref.close()
                        return False
                    self._held[pid] = ref
            else:
                ref.close()
        return added

    def _proves(self, pid: int, held: dict[int, _proctree.ProcRef], group_only: bool) -> bool:
        """Read ``pid`` again (its pidfd is open) and prove it ours (see the module note)."""
        info = _proctree.stat(pid)
        if info is None or info[2] == "Z":
            return False
        ppid, pgid, _ = info
        if not group_only and _proctree.tag_matches(_proctree.read_tags(pid), self.tag):
            return True
        if group_only and pgid != self.pid:
            return False
        if (ppid == self.pid or pgid == self.pid) and self._root_alive():
            return True
        parent = held.get(ppid)
        if parent is not None and not group_only and parent.alive():
            return True
        if pgid == self.pid:
            for anchor in held.values():
                if anchor.pid == pid:
                    continue
                anchor_info = _proctree.stat(anchor.pid)
                if anchor_info is not None and anchor_info[1] == self.pid and anchor.alive():
                    return True
        return False


class _NotYet(Exception):
    """A non-blocking reap found no exit status yet."""


# PID -> start time of every root whose handle is open in this process: not descendants
# of one another (each is our own child or the fork server's), vouched for by _lineage.
_open_roots: dict[int, int] = {}


def _is_open_root(pid: int, start: int) -> bool:
    return _open_roots.get(pid) == start


def _unlist(process: multiprocessing.process.BaseProcess) -> None:
    """Take a process we started off multiprocessing's list of children.

    Every ``Process.start()``, in whatever thread, first polls each child on
    that list (``_cleanup``), and so does ``active_children()``; a poll is
    not thread-safe. Under the fork server two polls of one child race for
    the one status message the server writes: the loser reads EOF and
    records exit code 255 over the winner's (a test caught a worker that
    exited 0 reported as 255, one run in fifteen); under fork another
    thread's ``waitpid`` reaps our child before us. Off the list, only we
    poll and reap it (under its reap lock); the scope, not multiprocessing's
    exit handler, ends it at interpreter exit. Started an instant ago, it
    cannot have exited while it was still listed. ``quiesce doctor`` finds
    it in ``unlisted`` instead, to name it in its report.
    """
    children = getattr(multiprocessing.process, "_children", None)
    if isinstance(children, set):
        children.discard(process)
    unlisted.add(process)


unlisted: weakref.WeakSet[multiprocessing.process.BaseProcess] = weakref.WeakSet()


def _status_taken_by_another_thread(process: multiprocessing.process.BaseProcess) -> int | None:
    """``process.join()`` returned and ``exitcode`` is still None: under fork,
    another thread's ``Process.start()`` polled every listed child
    (multiprocessing's ``_cleanup``) in the instant before ``_unlist`` took
    this one off the list, and its ``waitpid`` won the race with ours, which
    got ECHILD. That thread records the status a moment later: wait for it
    (bounded; None if it never comes, as after the program's own
    ``waitpid(-1)``)."""
    deadline = time.monotonic() + 1.0
    while process.exitcode is None and time.monotonic() < deadline:
        time.sleep(0.001)
    return process.exitcode


def _wakes(sig: int) -> bool:
    """Whether ``sig`` must be followed by SIGCONT (a stopped process would not see it)."""
    return sig not in (signal.SIGKILL, signal.SIGSTOP, signal.SIGCONT)


def _leads_group(pid: int) -> bool:
    try:
        return os.getpgid(pid) == pid
    except OSError:
        return False


def _exited_unreaped(pid: int) -> bool:
    """Whether our unreaped child ``pid`` has exited (call under the reap lock)."""
    waitid = getattr(os, "waitid", None)
    if waitid is not None:
        try:
            return waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
        except ChildProcessError:
            return True
    info = _proctree.stat(pid)
    return info is None or info[2] == "Z"


def _after_fork_in_child() -> None:
    _open_roots.clear()  # the parent's workers: not this process's


os.register_at_fork(after_in_child=_after_fork_in_child)
