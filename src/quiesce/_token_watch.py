"""Runs a shared token's local callbacks when another process stops it.

A stop made in this process runs callbacks in the stopping thread. A stop
made in another process only flips shared memory and the eventfd, so one
daemon thread per process waits, with ``selectors``, on the fds of the
shared tokens that have callbacks here, and fires them.

The watcher holds each token weakly (a watched token can still be
collected) but its core, which owns the fd, strongly: the fd is closed only
after the watcher has unregistered it, so a recycled fd number never meets a
stale registration. It is the only thread that touches its selector; other
threads (and the weakref callback of a collected token) hand it work
through a queue and a wake-up pipe. After fork the child gets a fresh
watcher re-armed with the inherited tokens (threads and epoll sets do not
survive fork).
"""

from __future__ import annotations

import collections
import os
import selectors
import threading
import weakref
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from quiesce._token import StopToken


class _Watcher:
    def __init__(self, tokens: list[StopToken] | None = None) -> None:
        self._requests: collections.deque[weakref.ref[StopToken]] = collections.deque(
            weakref.ref(t) for t in tokens or ()
        )
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._watched: dict[int, tuple[weakref.ref[StopToken], object]] = {}
        if self._requests:
            self._ensure_thread()

    def watch(self, token: StopToken) -> None:
        self._requests.append(weakref.ref(token, self._wake))
        self._ensure_thread()
        self._wake()

    def tokens(self) -> list[StopToken]:
        refs = [ref for ref, _ in self._watched.values()] + list(self._requests)
        return [t for t in (r() for r in refs) if t is not None]

    def _wake(self, _ref: object = None) -> None:
        try:
            os.write(self._wake_w, b"\0")
        except (BlockingIOError, OSError):
            pass
        except (AttributeError, TypeError):
            pass  # a token collected at interpreter exit, after `os` was torn down

    def _ensure_thread(self) -> None:
        if self._thread is not None:
            return
        with self._start_lock:
            if self._thread is None:
                thread = threading.Thread(
                    target=self._run, name="quiesce-token-watcher", daemon=True
                )
                thread.start()
                self._thread = thread

    def _run(self) -> None:
        selector = selectors.DefaultSelector()
        selector.register(self._wake_r, selectors.EVENT_READ)
        while True:
            while self._requests:
                self._register(selector, self._requests.popleft())
            for key, _ in selector.select(timeout=1.0):
                if key.fd == self._wake_r:
                    os.read(self._wake_r, 4096)
                else:
                    self._unwatch(selector, key.fd)
            # Unregister tokens that were collected, then let their cores go.
            for fd, (ref, _core) in list(self._watched.items()):
                if ref() is None:
                    selector.unregister(fd)
                    del self._watched[fd]

    def _register(self, selector: selectors.BaseSelector, ref: weakref.ref[StopToken]) -> None:
        token = ref()
        if token is None:
            return
        if token.stopped:
            token._fire()
            return
        fd = token.fileno()
        if fd not in self._watched:
            selector.register(fd, selectors.EVENT_READ)
            self._watched[fd] = (weakref.ref(token, self._wake), token._core)

    def _unwatch(self, selector: selectors.BaseSelector, fd: int) -> None:
        selector.unregister(fd)
        entry = self._watched.pop(fd, None)
        token = entry[0]() if entry is not None else None
        if token is not None:
            token._fire()


_instance: _Watcher | None = None
_instance_lock = threading.Lock()


def watcher() -> _Watcher:
    global _instance
    if _instance is None:
        with _instance_lock:
            if _instance is None:
                _instance = _Watcher()
    return _instance


def _after_fork_in_child() -> None:
    global _instance, _instance_lock
    _instance_lock = threading.Lock()
    inherited = _instance.tokens() if _instance is not None else []
    _instance = _Watcher(inherited) if inherited else None


os.register_at_fork(after_in_child=_after_fork_in_child)
