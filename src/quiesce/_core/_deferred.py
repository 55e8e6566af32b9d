"""Run work requested by a signal handler on a helper thread.

A Python signal handler runs in the main thread between two bytecodes,
possibly while that thread holds a lock the handler's work needs (a
token's, a scope's): stopping a token right there could deadlock. The
handler only puts the work on a ``queue.SimpleQueue``, whose ``put`` is
documented as safe from signal handlers; one daemon thread runs it.

Two ways to have that thread:

* ``start()``: now (``handle_signals``, in the main thread, before it
  installs its handlers);
* ``start_on_wake()``: on the first request only, for a process that
  already has a thread waiting on fds (a quiesce child's lifeline). The
  handler then also writes a byte to a wake-up fd that this thread
  watches; it calls ``start()``, which is safe there and not in a handler
  (starting a thread takes locks). A quiesce child that is never sent
  SIGTERM (most of them: they end at the token) thus never pays for the
  thread, neither to start it nor at its exit, when the kernel must
  schedule every thread of a process to end it. The work is not run by
  the waiting thread itself: it may run user callbacks (a token's
  ``on_stop``), which must not hold up what that thread watches.

Every quiesce child process imports this module: ``SimpleQueue`` comes
from ``_queue`` (the C half of ``queue``, without heapq and the rest), and
logging is imported only to report a failure (see _log).
"""

from __future__ import annotations

import os
import threading
from _queue import Empty, SimpleQueue
from collections.abc import Callable

from quiesce._core._log import log  # logging imported on first use
from quiesce._core._wake_fd import HAS_EVENTFD, new_wake_fds, signal_fd

_queue: SimpleQueue[Callable[[], None]] = SimpleQueue()
_thread: threading.Thread | None = None
_lock = threading.Lock()
_wake_w = -1  # the write end of start_on_wake's fd (-1: none); never closed while set
_wake_fds: set[int] = set()  # start_on_wake's fds: closed only in a forked child


def start() -> None:
    """Start the helper thread; call from normal code, before a handler may need it.

    Raises RuntimeError if the thread cannot be started.
    """
    global _thread, _wake_w
    with _lock:
        if _thread is None or not _thread.is_alive():
            _thread = threading.Thread(target=_serve, name="quiesce-signal-work", daemon=True)
            _thread.start()
        _wake_w = -1  # served now: requests need no wake-up any more


def start_on_wake() -> int | None:
    """An fd that turns readable at the first request: then call ``woken(fd)``
    from the thread that watches it.

    Returns None if no fd can be made (EMFILE): call ``start()`` now instead.
    The fd stays open for the life of the process (a handler may still write
    to it), so the caller must not close it.
    """
    global _wake_w
    try:
        read_fd, write_fd = new_wake_fds()
    except OSError:
        return None
    _wake_fds.update((read_fd, write_fd))
    _wake_w = write_fd
    if not _queue.empty():  # a request came before the fd: wake at once
        signal_fd(write_fd)
    return read_fd


def call_soon(fn: Callable[[], None]) -> None:
    """Queue ``fn`` for the helper thread; safe inside a signal handler."""
    _queue.put(fn)
    write_fd = _wake_w
    if write_fd >= 0:
        signal_fd(write_fd)


def woken(fd: int) -> bool:
    """``start_on_wake``'s ``fd`` is readable: start the thread; True if it now serves
    (stop watching ``fd``). If it cannot be started, run the work here, and False:
    watch ``fd`` still, for the next request."""
    try:
        start()
        return True
    except Exception:  # no thread to be had (RuntimeError): the work must still be done
        try:
            os.read(fd, 8 if HAS_EVENTFD else 4096)
        except OSError:
            pass
        while True:
            try:
                fn = _queue.get_nowait()
            except Empty:
                return False
            _run(fn)


def _serve() -> None:
    while True:
        _run(_queue.get())


def _run(fn: Callable[[], None]) -> None:
    try:
        fn()
    except Exception:
        log.exception("quiesce: work requested by a signal failed")


def _after_fork_in_child() -> None:
    global _queue, _thread, _lock, _wake_w
    _wake_w = -1  # first: a handler running meanwhile must not write to a closed fd
    for fd in _wake_fds:  # the thread that watched them is the parent's, not here
        try:
            os.close(fd)
        except OSError:
            pass
    _wake_fds.clear()
    _queue = SimpleQueue()
    _thread = None
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)
