"""The two storage backends behind StopToken: shared across processes, or local.

``SharedCore`` is what ``StopToken()`` uses: the flag and reason live in a
shared-memory slot (see _shm) and the wake-up is an eventfd (a pipe off
Linux) that becomes readable once stopped and is never read, so any number
of waiters in any number of processes see it, and ``fileno()`` works with
``select``. Both pieces travel to children: inherited under fork, and
through multiprocessing's DupFd under spawn and forkserver.

A shared core is written to its eventfd only once the fd is *exposed*:
handed out by ``fileno()``, pickled for another process, or alive across a
fork (the at-fork hook in _token exposes every shared core). Until then no
other process holds the token and nobody in this one waits on the fd, so
its waiters (``wait()``) sleep on a latch (_latch: an Event without its
Condition) made on first wait, which ``set`` opens without a system call
unless a thread sleeps on it. That matters when a scope stops its
threads: an eventfd write releases the GIL, so stopping 100 worker tokens
one write at a time handed the GIL to each woken worker and back, one
round trip per token, where ``Event.set()`` never lets go of it. Exposing a core that
is already stopped writes the fd then, so a late fd waiter still wakes.
The latch's waiters also wake when the stop comes from another process
(possible only once exposed): the watcher's ``_observe`` calls
``wake_local``.

``LocalCore`` is for tokens that never leave their process (one per thread
pool task): a one-byte flag and a reason, with a latch made only if
someone waits and a wake-up pipe only if someone asks for ``fileno()``.

Rejected: ``multiprocessing.Event`` (no fileno, cannot carry a reason, its
semaphore cannot be polled with select); a pipe read to learn the flag (a
system call per ``stopped`` check, ~400 ns against ~50 ns for shared memory).
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

from quiesce._core import _shm
from quiesce._core._fd_wait import wait_readable
from quiesce._core._latch import Latch
from quiesce._core._wake_fd import close_fds, new_wake_fds, signal_fd

_REASON_MAX = _shm.SLOT_SIZE - 3
_local_lock = threading.Lock()


class SharedCore:
    """Flag + reason in shared memory, wake-up on an fd: visible to every process."""

    __slots__ = ("__weakref__", "_finalizer", "_latch", "exposed", "read_fd", "slot",
                 "write_fd")

    def __init__(self, slot: _shm.Slot | None = None,
                 fds: tuple[int, int] | None = None) -> None:
        self.slot = slot if slot is not None else _shm.allocate()
        self.read_fd, self.write_fd = fds if fds is not None else new_wake_fds()
        self._finalizer = weakref.finalize(self, close_fds, self.read_fd, self.write_fd)
        # A core rebuilt from another process's is exposed from the start: that
        # process may wait on the fd.
        self.exposed = fds is not None
        self._latch: Latch | None = None  # waiters of an unexposed core

    shared = True

    def is_set(self) -> bool:
        return self.slot.memory[self.slot.offset] != 0

    def expose(self) -> None:
        """From now on every stop writes the fd; if already stopped, write it now.

        Ordered against ``set`` (flag, then "exposed?") as "exposed, then
        flag?": whichever runs second sees the other's write, so the fd is
        written at least once after a stop.
        """
        if not self.exposed:
            self.exposed = True
            if self.is_set():
                signal_fd(self.write_fd)

    def wake_local(self) -> None:
        """Wake this process's latch waiters (a stop seen by the watcher)."""
        latch = self._latch
        if latch is not None:
            latch.open()

    def set(self, reason: str | None) -> bool:
        """Mark stopped; True if this call did it (first stopper wins the reason)."""
        memory, offset = self.slot.memory, self.slot.offset
        first = memory[offset] == 0
        if first:
            if reason is None:
                memory[offset + 1] = memory[offset + 2] = 0
            else:
                data = reason.encode("utf-8", "replace")[:_REASON_MAX]
                size = len(data)
                memory[offset + 3 : offset + 3 + size] = data
                memory[offset + 1] = size & 0xFF
                memory[offset + 2] = (size >> 8) | 0x80
            memory[offset] = 1
        if self.exposed:  # else no fd waiter anywhere: no system call (nor GIL release)
            signal_fd(self.write_fd)
        latch = self._latch
        if latch is not None:
            latch.open()
        return first

    def reason(self) -> str | None:
        memory, offset = self.slot.memory, self.slot.offset
        if memory[offset] == 0 or not memory[offset + 2] & 0x80:
            return None
        length = memory[offset + 1] | ((memory[offset + 2] & 0x7F) << 8)
        return bytes(memory[offset + 3 : offset + 3 + length]).decode("utf-8", "replace")

    def wait(self, timeout: float | None) -> bool:
        if self.is_set():
            return True
        if self.exposed:
            wait_readable(self.read_fd, timeout)
            return self.is_set()
        latch = self._latch
        if latch is None:
            with _local_lock:
                if self._latch is None:
                    self._latch = Latch()
                latch = self._latch
            if self.is_set():  # set() read no latch before we made it: look again
                return True
        latch.wait(timeout)
        return self.is_set()

    def fileno(self) -> int:
        self.expose()
        return self.read_fd

    def reduce(self) -> tuple[Any, ...]:
        from multiprocessing.reduction import DupFd

        self.expose()
        write = None if self.write_fd == self.read_fd else DupFd(self.write_fd)
        return (_rebuild_shared, (self.slot, DupFd(self.read_fd), write))


def _rebuild_shared(slot: _shm.Slot, read: Any, write: Any) -> SharedCore:
    read_fd = read.detach()
    write_fd = read_fd if write is None else write.detach()
    return SharedCore(slot, (read_fd, write_fd))


class LocalCore:
    """An in-process token state: cheap to create, cannot cross a process boundary.

    Creating one is a bytearray and a few slots (~0.3 us): the latch that
    ``wait()`` needs and the pipe that ``fileno()`` needs are made on first
    use, under one lock shared by all local cores (they are rare calls).
    """

    __slots__ = ("__weakref__", "_fds", "_latch", "_reason", "flag")

    shared = False

    def __init__(self) -> None:
        self.flag = bytearray(1)
        self._reason: str | None = None
        self._latch: Latch | None = None
        self._fds: tuple[int, int] | None = None

    def is_set(self) -> bool:
        return self.flag[0] != 0

    def set(self, reason: str | None) -> bool:
        with _local_lock:
            if self.flag[0]:
                return False
            self._reason = reason
            self.flag[0] = 1
            latch, fds = self._latch, self._fds
        if latch is not None:
            latch.open()
        if fds is not None:
            signal_fd(fds[1])
        return True

    def reason(self) -> str | None:
        return self._reason if self.flag[0] else None

    def wake_local(self) -> None:
        """Nothing to do: only ``set`` sets a local flag, and it wakes the waiters."""

    def wait(self, timeout: float | None) -> bool:
        if self.flag[0]:
            return True
        with _local_lock:
            if self._latch is None:
                self._latch = Latch()
                if self.flag[0]:
                    self._latch.open()
            latch = self._latch
        return latch.wait(timeout)

    def fileno(self) -> int:
        with _local_lock:
            if self._fds is None:
                self._fds = new_wake_fds()
                weakref.finalize(self, close_fds, *self._fds)
                if self.flag[0]:
                    signal_fd(self._fds[1])
            return self._fds[0]

    def reduce(self) -> tuple[Any, ...]:
        raise TypeError(
            "this StopToken is local to its process (a thread-pool task's token) and "
            "cannot be sent to another process; pass token.child() instead"
        )
