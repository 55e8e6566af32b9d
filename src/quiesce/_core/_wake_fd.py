"""A wake-up fd: readable once written, for threads and loops that wait on fds.

An eventfd where the platform has one (a single fd, a counter that a
write bumps and nothing here ever reads back), else a non-blocking pipe.
Shared by the tokens' cores (_token_core) and the signal work queue
(_deferred), which every quiesce child process imports: this module needs
``os`` alone.
"""

from __future__ import annotations

import os

HAS_EVENTFD = hasattr(os, "eventfd")


def new_wake_fds() -> tuple[int, int]:
    """(read_fd, write_fd): eventfd has one fd for both, a pipe two. Both are
    non-blocking and close on exec. Raises OSError (EMFILE, ENFILE)."""
    if HAS_EVENTFD:
        fd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        return fd, fd
    r, w = os.pipe()
    for fd in (r, w):
        os.set_blocking(fd, False)
        os.set_inheritable(fd, False)
    return r, w


def signal_fd(write_fd: int) -> None:
    """Make the fd readable (again); never raises."""
    try:
        if HAS_EVENTFD:
            os.eventfd_write(write_fd, 1)
        else:
            os.write(write_fd, b"\0")
    except OSError:
        pass  # already readable (pipe full / counter saturated) or closed at exit


def close_fds(read_fd: int, write_fd: int) -> None:
    """Close both ends (one fd for an eventfd); never raises."""
    for fd in {read_fd, write_fd}:
        try:
            os.close(fd)
        except OSError:
            pass
