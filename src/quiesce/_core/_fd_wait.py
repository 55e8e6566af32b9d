"""Wait until one fd is readable, whatever its number.

``select.select`` refuses an fd at or above FD_SETSIZE (1024): "filedescriptor
out of range in select()". A process that holds many fds (a server, a test
suite that made thousands of tokens) gets its pidfds and token fds numbered
past that, and a worker start then failed with that ValueError (seen in a
test run). ``poll`` takes any fd number and needs no fd of its own (unlike
epoll), so it also works when the process is out of fds.
"""

from __future__ import annotations

import select

_LONGEST_MS = 2**31 - 1  # poll's timeout is a C int of milliseconds (~24.8 days)


def wait_readable(fd: int, timeout: float | None) -> bool:
    """Sleep until ``fd`` is readable (or at EOF, hung up or in error), or ``timeout``
    seconds pass (None: no limit, 0: just look); True if it is.

    Example::

        if wait_readable(pidfd, 0):     # a pidfd is readable once its process exited
            ...
    """
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    # PEP 475: poll is retried after a signal handler that returns normally,
    # with the timeout recomputed; a handler that raises propagates here.
    limit = None if timeout is None else min(max(timeout, 0.0) * 1000.0, _LONGEST_MS)
    return bool(poller.poll(limit))
