"""Small fixed-size slots of memory shared with child processes.

A shared StopToken keeps its flag and reason in one 256-byte slot, so any
process can read ``stopped`` with one memory load instead of a
system call. Slots come from 64 KiB arenas backed by a file descriptor
(memfd on Linux, an unlinked temporary file elsewhere), because an
anonymous mapping survives fork but cannot reach a spawn or forkserver
child; the descriptor can, through multiprocessing's DupFd.

Rejected: ``multiprocessing.sharedctypes.RawArray`` does the same job but
costs ~19 us a slot (measured here), and POSIX named shared memory needs
names and unlinking that a SIGKILL would leak.

A slot is returned to its arena when its token is collected, but only in
the process that allocated it; after fork a child allocates from arenas of
its own, so parent and child never hand out the same slot twice.
"""

from __future__ import annotations

import mmap
import os
import tempfile
import threading
from typing import Any

SLOT_SIZE = 256
_ARENA_SIZE = 64 * 1024


class Arena:
    """One shared mapping, split into slots; picklable to a child by its fd."""

    def __init__(self, fd: int | None = None, key: tuple[int, int] | None = None) -> None:
        if fd is None:
            fd = _new_backing_fd()
            os.ftruncate(fd, _ARENA_SIZE)
        self.fd = fd
        self.key = key if key is not None else (os.getpid(), id(self))
        self.memory = mmap.mmap(fd, _ARENA_SIZE)
        self.view = memoryview(self.memory)  # arenas stay mapped for the process's life
        self.free = list(range(_ARENA_SIZE // SLOT_SIZE - 1, -1, -1))


def _new_backing_fd() -> int:
    memfd_create = getattr(os, "memfd_create", None)
    if memfd_create is not None:
        return int(memfd_create("quiesce-tokens", os.MFD_CLOEXEC))
    directory = "/dev/shm" if os.path.isdir("/dev/shm") else None
    fd, path = tempfile.mkstemp(prefix="quiesce-", dir=directory)
    os.unlink(path)
    return fd


class Slot:
    """A view on one slot; frees itself in its allocating process when collected."""

    __slots__ = ("__weakref__", "arena", "index", "memory", "offset", "owner_pid")

    def __init__(self, arena: Arena, index: int, owner_pid: int) -> None:
        self.arena = arena
        self.index = index
        self.memory = arena.memory
        self.offset = index * SLOT_SIZE
        self.owner_pid = owner_pid

    def __del__(self) -> None:
        if self.owner_pid == os.getpid():
            _allocator.release(self.arena, self.index)

    def __reduce__(self) -> tuple[Any, ...]:
        from multiprocessing.reduction import DupFd

        return (_rebuild_slot, (DupFd(self.arena.fd), self.arena.key, self.index))


class _Allocator:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.arenas: list[Arena] = []
        self.pid = os.getpid()

    def allocate(self) -> Slot:
        with self.lock:
            for arena in self.arenas:
                if arena.free:
                    return self._take(arena)
            arena = Arena()
            self.arenas.append(arena)
            return self._take(arena)

    def _take(self, arena: Arena) -> Slot:
        index = arena.free.pop()
        start = index * SLOT_SIZE
        arena.memory[start : start + SLOT_SIZE] = bytes(SLOT_SIZE)
        return Slot(arena, index, self.pid)

    def release(self, arena: Arena, index: int) -> None:
        # Called from __del__, possibly during garbage collection in any
        # thread: list.append is atomic under the GIL, so no lock is taken.
        arena.free.append(index)


_allocator = _Allocator()
# Arenas mapped from a parent through pickling, by the parent's key.
_foreign: dict[tuple[int, int], Arena] = {}
_foreign_lock = threading.Lock()


def allocate() -> Slot:
    return _allocator.allocate()


def _rebuild_slot(dupfd: Any, key: tuple[int, int], index: int) -> Slot:
    fd = dupfd.detach()
    with _foreign_lock:
        arena = _foreign.get(key)
        if arena is None:
            arena = Arena(fd, key)
            _foreign[key] = arena
        else:
            os.close(fd)
    return Slot(arena, index, owner_pid=-1)


def _after_fork_in_child() -> None:
    global _allocator
    # Inherited arenas stay mapped (existing tokens keep working) but the
    # child never allocates from them: the parent still owns their slots.
    _allocator = _Allocator()


os.register_at_fork(after_in_child=_after_fork_in_child)
