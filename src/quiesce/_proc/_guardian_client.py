"""The owner's side of the guardian (see ``_guardian.py`` for its design).

One guardian per owner process, started on first need. The owner keeps the
only write end of the guardian's stdin (close-on-exec; closed again in a
forked child, which gets a guardian of its own if it needs one), so the
socket's EOF tells the guardian the owner is gone. A daemon thread waits for
the guardian, so it never lingers as a zombie in our process table; if it
dies while we live, the next ``Guardian.get()`` starts a new one with the
same groups. Starting it can fail (no ``sys.executable``, a zipped package,
out of fds): the owner then logs a warning and carries on with a no-op
guardian, keeping PDEATHSIG and the lifeline threads.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import threading
from typing import ClassVar, final

from quiesce._proc import _proctree

log = logging.getLogger("quiesce")

_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_guardian.py")
_MAX_RESTARTS = 3


@final
class Guardian:
    """This process's guardian: ``Guardian.get().watch_group(pgid)``."""

    _instance: ClassVar[Guardian | None] = None
    _lock: ClassVar[threading.Lock] = threading.Lock()
    _restarts: ClassVar[int] = 0

    def __init__(self, proc: subprocess.Popen[bytes] | None, wfd: int,
                 groups: set[int]) -> None:
        self._proc = proc
        self._wfd = wfd
        self._groups = groups
        self._write_lock = threading.Lock()
        self._exited = False

    @classmethod
    def get(cls) -> Guardian:
        """The guardian of this process, started on first call (a no-op one if it can't be)."""
        inst = cls._instance
        if inst is not None and not inst._exited:
            return inst
        with cls._lock:
            inst = cls._instance
            if inst is None or inst._exited:
                groups = set() if inst is None else inst._groups
                if inst is not None:
                    cls._restarts += 1
                cls._instance = inst = cls._start(groups)
        return inst

    @classmethod
    def _start(cls, groups: set[int]) -> Guardian:
        if cls._restarts > _MAX_RESTARTS:
            return cls._no_op(groups, "it died too often")
        if not sys.executable or not os.path.isfile(_SCRIPT):
            return cls._no_op(groups, f"cannot run {_SCRIPT!r} with {sys.executable!r}")
        try:
            # A socket pair, not a pipe: a pipe's end can be opened again through
            # /proc/PID/fd by any process of our uid, a socket's cannot (see _guardian).
            ours, theirs = socket.socketpair()  # both close-on-exec
            rfd, wfd = theirs.detach(), ours.detach()
        except OSError as exc:
            return cls._no_op(groups, str(exc))
        try:
            proc = subprocess.Popen(
                [sys.executable, "-S", "-E", "-s", _SCRIPT, str(os.getpid()),
                 _proctree.owner_tag()],
                stdin=rfd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                close_fds=True, start_new_session=True, cwd="/",
            )
        except (OSError, subprocess.SubprocessError) as exc:
            os.close(wfd)
            return cls._no_op(groups, str(exc))
        finally:
            os.close(rfd)
        os.set_blocking(wfd, False)  # a stopped guardian must never block a worker start
        inst = cls(proc, wfd, groups)
        for pgid in sorted(groups):
            inst._send(f"+{pgid}\n")
        try:
            threading.Thread(target=inst._reap, name="quiesce-guardian-reaper",
                             daemon=True).start()
        except RuntimeError as exc:  # no thread to be had: it guards all the same
            log.warning("quiesce: cannot watch the guardian process for its exit (%s)", exc)
        return inst

    @classmethod
    def _no_op(cls, groups: set[int], why: str) -> Guardian:
        log.warning("quiesce: cannot start the guardian process (%s); grandchildren of "
                    "this process may outlive it if it is SIGKILLed", why)
        return cls(None, -1, groups)

    @property
    def pid(self) -> int | None:
        """The guardian's PID; None for the no-op guardian."""
        return None if self._proc is None else self._proc.pid

    def watch_group(self, pgid: int) -> None:
        """Kill the members of process group ``pgid`` if this process dies."""
        _check_pgid(pgid)
        with self._write_lock:
            self._groups.add(pgid)
        self._send(f"+{pgid}\n")

    def unwatch_group(self, pgid: int) -> None:
        """Forget ``pgid`` (its worker ended; the number may be reused by strangers)."""
        _check_pgid(pgid)
        with self._write_lock:
            self._groups.discard(pgid)
        self._send(f"-{pgid}\n")

    def _send(self, line: str) -> None:
        with self._write_lock:
            if self._wfd < 0:
                return
            try:
                os.write(self._wfd, line.encode())  # < PIPE_BUF: atomic
            except BlockingIOError:
                log.warning("quiesce: guardian %s is not reading; %r dropped", self.pid, line)
            except OSError:
                pass  # it died: _reap notices, the next get() restarts it

    def _reap(self) -> None:
        assert self._proc is not None
        code = self._proc.wait()
        with self._write_lock:
            if self._wfd >= 0:
                os.close(self._wfd)
                self._wfd = -1
        log.warning("quiesce: the guardian process %d ended (status %s) while its owner "
                    "lives; a new one starts when next needed", self._proc.pid, code)
        self._exited = True

    def _forget_after_fork(self) -> None:
        """In a forked child: drop the parent's end (else EOF never comes)."""
        if self._wfd >= 0:
            os.close(self._wfd)
        self._wfd, self._proc, self._exited = -1, None, True
        self._write_lock = threading.Lock()  # another thread may have held it at the fork


def _check_pgid(pgid: int) -> None:
    if not isinstance(pgid, int) or pgid <= 0:
        raise ValueError(f"pgid must be a positive int, not {pgid!r}")


def _after_fork_in_child() -> None:
    inst = Guardian._instance
    if inst is not None:
        inst._forget_after_fork()
    Guardian._instance = None
    Guardian._lock = threading.Lock()
    Guardian._restarts = 0


os.register_at_fork(after_in_child=_after_fork_in_child)
