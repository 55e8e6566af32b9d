"""One long-lived thread that starts every child process quiesce owns.

Linux delivers PR_SET_PDEATHSIG when the parent *thread* that forked the
child exits, not the parent process. A child started from a short-lived
worker thread would be killed the moment that thread returned. So every
start goes through this daemon thread, which lives as long as the process
(daemon threads are never joined; they end with the process itself).

The main thread starts its children itself: it too lives as long as the
process (the interpreter ends in it, after joining the other threads), and
the hand-off to the launcher thread and back cost a process start about a
millisecond of GIL ping-pong.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import TypeVar

T = TypeVar("T")


class _Launcher:
    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[tuple[Callable[[], object], Future[object]]] = (
            queue.SimpleQueue()
        )
        self._thread = threading.Thread(target=self._run, name="quiesce-launcher", daemon=True)
        self._thread.start()

    def call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` in the launcher thread and return its result (or raise its error)."""
        if threading.current_thread() is self._thread or _is_main_thread():
            return fn()
        future: Future[object] = Future()
        self._queue.put((fn, future))
        return future.result()  # type: ignore[return-value]

    def _run(self) -> None:
        while True:
            fn, future = self._queue.get()
            try:
                future.set_result(fn())
            except BaseException as exc:
                future.set_exception(exc)
            del fn, future


def _is_main_thread() -> bool:
    # The OS thread that leads the process (after a fork: the thread that forked):
    # it exits with the process, never before.
    return threading.current_thread() is threading.main_thread()


_instance: _Launcher | None = None
_lock = threading.Lock()


def launch(fn: Callable[[], T]) -> T:
    global _instance
    if _is_main_thread():
        return fn()
    if _instance is None:
        with _lock:
            if _instance is None:
                _instance = _Launcher()
    return _instance.call(fn)


def _after_fork_in_child() -> None:
    global _instance, _lock
    _instance, _lock = None, threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)
