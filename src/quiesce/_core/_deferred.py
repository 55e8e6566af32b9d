"""Run work requested by a signal handler on a helper thread.

A Python signal handler runs in the main thread between two bytecodes,
possibly while that thread holds a lock the handler's work needs (a
token's, a scope's): stopping a token right there could deadlock. The
handler only puts the work on a ``queue.SimpleQueue``, whose ``put`` is
documented as safe from signal handlers; one daemon thread runs it.

Every quiesce child process imports this module: ``SimpleQueue`` comes
from ``_queue`` (the C half of ``queue``, without heapq and the rest), and
logging is imported only to report a failure.
"""

from __future__ import annotations

import os
import threading
from _queue import SimpleQueue
from collections.abc import Callable

_queue: SimpleQueue[Callable[[], None]] = SimpleQueue()
_thread: threading.Thread | None = None
_lock = threading.Lock()


def start() -> None:
    """Start the helper thread; call from normal code, before a handler may need it."""
    global _thread
    with _lock:
        if _thread is None or not _thread.is_alive():
            _thread = threading.Thread(target=_serve, name="quiesce-signal-work", daemon=True)
            _thread.start()


def call_soon(fn: Callable[[], None]) -> None:
    """Queue ``fn`` for the helper thread; safe inside a signal handler."""
    _queue.put(fn)


def _serve() -> None:
    while True:
        fn = _queue.get()
        try:
            fn()
        except Exception:
            import logging  # rare: a child process need not import logging otherwise

            logging.getLogger("quiesce").exception("quiesce: work requested by a signal failed")


def _after_fork_in_child() -> None:
    global _queue, _thread, _lock
    _queue = SimpleQueue()
    _thread = None
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)
