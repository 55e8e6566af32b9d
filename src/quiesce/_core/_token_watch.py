"""The watcher: runs a shared token's local callbacks when another process stops it.

A stop made in this process runs callbacks in the stopping thread. A stop
made in another process only flips shared memory and the eventfd, so one
daemon thread per process waits on the fds of the shared tokens that have
crossed a process boundary, sets their ``stopped`` and fires their callbacks.

The watcher holds each token weakly (a watched token can still be
collected) but its core, which owns the fd, strongly: the fd is closed only
after the watcher has unregistered it, so a recycled fd number never meets a
stale registration. It is the only thread that touches its selector; other
threads (and the weakref callback of a collected token) hand it work
through a queue and a wake-up pipe. It knows tokens only through the
narrow ``Watched`` protocol, so this module does not import the token's.

Rejected: epoll (an fd of its own, which EMFILE can deny: ``poll`` needs
none); one thread per watched token.
"""

from __future__ import annotations

import collections
import os
import selectors
import threading
import time
import weakref
from typing import Protocol

from quiesce._core._log import log  # logging imported on first use
from quiesce._core._token_core import LocalCore, SharedCore


class Watched(Protocol):
    """What the watcher asks of a token."""

    @property
    def _core(self) -> SharedCore | LocalCore: ...

    def fileno(self) -> int: ...

    def _observe(self) -> None: ...


class _Watcher:
    """One daemon thread firing local callbacks of tokens stopped in another process.

    It must survive running out of fds (EMFILE): it waits with ``poll``
    (``PollSelector`` needs no fd of its own, unlike epoll), and if even its
    wake-up pipe cannot be made it polls its request queue every
    ``_DEGRADED_POLL`` seconds instead. An error inside the loop is logged
    and the loop goes on; a thread that could not be started (or died) is
    started again by the next ``watch``.
    """

    def __init__(self) -> None:
        self._requests: collections.deque[weakref.ref[Watched]] = collections.deque()
        try:
            self._wake_r, self._wake_w = os.pipe()
            os.set_blocking(self._wake_w, False)
        except OSError:  # EMFILE/ENFILE: work without a wake-up pipe, by polling
            self._wake_r = self._wake_w = -1
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._watched: dict[int, tuple[weakref.ref[Watched], object]] = {}

    def watch(self, token: Watched) -> None:
        self._requests.append(weakref.ref(token, self._wake))
        self._ensure_thread()
        self._wake()

    def _wake(self, _ref: object = None) -> None:
        if self._wake_w < 0:
            return  # degraded: the thread looks at its requests often anyway
        try:
            os.write(self._wake_w, b"\0")
        except (BlockingIOError, OSError):
            pass
        except (AttributeError, TypeError):
            pass  # a token collected at interpreter exit, after `os` was torn down

    def _ensure_thread(self) -> None:
        """Start the thread if it is not running; raise (e.g. RuntimeError) if it cannot be."""
        thread = self._thread
        if thread is not None and thread.is_alive():
            return
        with self._start_lock:
            if self._thread is None or not self._thread.is_alive():
                thread = threading.Thread(
                    target=self._run, name="quiesce-token-watcher", daemon=True
                )
                thread.start()
                self._thread = thread

    def _run(self) -> None:
        selector = _fd_free_selector()
        if self._wake_r >= 0:
            selector.register(self._wake_r, selectors.EVENT_READ)
        timeout = 1.0 if self._wake_r >= 0 else _DEGRADED_POLL
        failures = 0
        while True:
            try:
                self._run_once(selector, timeout)
                failures = 0
            except Exception:  # never die silently: stops made elsewhere would be lost
                failures += 1
                if failures == 1:
                    log.exception("quiesce: the token watcher failed; it carries on")
                time.sleep(min(1.0, 0.01 * failures))

    def _run_once(self, selector: selectors.BaseSelector, timeout: float) -> None:
        while self._requests:
            self._register(selector, self._requests.popleft())
        for key, _ in selector.select(timeout=timeout):
            if key.fd == self._wake_r:
                os.read(self._wake_r, 4096)
            else:
                self._unwatch(selector, key.fd)
        # Unregister tokens that were collected, then let their cores go.
        for fd, (ref, _core) in list(self._watched.items()):
            if ref() is None:
                selector.unregister(fd)
                del self._watched[fd]

    def _register(self, selector: selectors.BaseSelector, ref: weakref.ref[Watched]) -> None:
        token = ref()
        if token is None:
            return
        if token._core.is_set():
            token._observe()
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
            token._observe()


_instance: _Watcher | None = None
_instance_lock = threading.Lock()


_DEGRADED_POLL = 0.05  # without a wake-up pipe: how often the watcher looks for new tokens


def _fd_free_selector() -> selectors.BaseSelector:
    poll_selector = getattr(selectors, "PollSelector", None)
    return poll_selector() if poll_selector is not None else selectors.DefaultSelector()


def watcher() -> _Watcher:
    """This process's watcher (made on first use; its thread started by ``watch``)."""
    global _instance
    if _instance is None:
        with _instance_lock:
            if _instance is None:
                _instance = _Watcher()
    return _instance


def forget_after_fork() -> None:
    """In a forked child: the parent's watcher thread is not here; the next ``watch`` makes one."""
    global _instance, _instance_lock
    _instance_lock = threading.Lock()
    _instance = None
