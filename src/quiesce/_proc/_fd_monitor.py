"""One thread per process that waits on the fds of every process worker.

Design note
-----------
A scope's process worker waits for two things: its result pipe and its
child's exit (a pidfd). One thread per worker did that, which cost every
``scope.process()`` a thread start (~0.2-0.7 ms with the GIL hand-off), and
when a scope stopped eight workers, eight threads woke at once to fight
for the GIL. Here one daemon thread waits with ``epoll`` on all of them
and runs each fd's callback when it turns readable.

Chosen: ``epoll``, because another thread may register an fd while the
monitor sleeps in ``epoll_wait`` (``epoll_ctl`` is thread-safe), so a
start never wakes the monitor or hands it the GIL. The callbacks get the
moment the wait returned: every exit reported in one batch happened before
it, so one look at the process table begun after it serves them all.

Timers (``call_at``) let a callback put work off a little (the process
worker holds an exit's /proc read for its stopping siblings, see
_scope/_process_worker): the wait's timeout is the earliest timer, and due
timers run after each batch of fd callbacks. Only callbacks set them, so
the wait under way never misses one (no wake-up fd needed).

Callbacks must be short and never block: the process worker reads its
pipe without blocking, reaps without blocking (the fork server reports
an exit status through the sentinel, which it then watches), and hands
anything slow (ending what a child left behind, a failure that stops a
scope and runs user callbacks) to a thread of its own. A callback that
raises is logged and its fd dropped; the loop itself never ends, so a
worker is never left unwatched by a dead monitor.

Rejected: ``select.poll`` with a wake-up pipe (every registration wakes
the monitor and costs a GIL round trip on the start path); a
``selectors`` selector (its fd map is not meant to be changed by one
thread while another selects). Workers without a pidfd (Linux < 5.3, macOS)
keep a thread of their own that polls (see _scope/_process_worker).

If the thread or the epoll fd cannot be made (thread limit, EMFILE),
``get()`` raises and ``scope.process()`` ends the child and raises that
error, as it did when its own thread could not start. A forked child
drops the parent's monitor (its thread does not exist there).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import select
import threading
import time
from collections.abc import Callable

log = logging.getLogger("quiesce")

Callback = Callable[[float], None]
_MAX_WAIT = 3600.0  # epoll's timeout overflows past ~24 days


class FdMonitor:
    """Runs ``callback(woke_at)`` in the monitor thread whenever a watched fd is readable.

    Level-triggered: a callback that leaves its fd readable is called again,
    so it must read it or ``remove`` it.

    Example::

        monitor = FdMonitor.get()
        monitor.add(pidfd, lambda woke_at: print("exited before", woke_at))
    """

    def __init__(self) -> None:
        self._epoll = select.epoll()
        self._callbacks: dict[int, Callback] = {}
        self._lock = threading.Lock()
        self._failed = False
        self._timers: list[tuple[float, int, Callback]] = []  # a heap; the monitor's own
        self._order = itertools.count()
        self._thread = threading.Thread(target=self._run, name="quiesce-monitor", daemon=True)
        try:
            self._thread.start()
        except BaseException:
            self._epoll.close()
            raise

    @classmethod
    def get(cls) -> FdMonitor:
        """This process's monitor, started on first use.

        Raises what starting it raises (OSError EMFILE for the epoll fd,
        RuntimeError "can't start new thread").
        """
        inst = _instance
        if inst is not None:
            return inst
        with _lock:
            return _get_locked(cls)

    def add(self, fd: int, callback: Callback) -> None:
        """Watch ``fd`` (any thread); ``callback`` runs in the monitor thread.

        Raises OSError if the kernel refuses (ENOMEM, ENOSPC: too many watches).
        """
        with self._lock:
            self._callbacks[fd] = callback
            try:
                self._epoll.register(fd, select.EPOLLIN)
            except BaseException:
                del self._callbacks[fd]
                raise

    def remove(self, fd: int) -> None:
        """Stop watching ``fd`` (before closing it); a no-op if it is not watched."""
        with self._lock:
            if self._callbacks.pop(fd, None) is None:
                return
            try:
                self._epoll.unregister(fd)
            except (OSError, ValueError):
                pass  # already closed: the kernel dropped it with its last reference

    def watching(self, fd: int) -> bool:
        return fd in self._callbacks

    def call_at(self, when: float, callback: Callback) -> None:
        """Run ``callback(woke_at)`` in the monitor thread once ``time.monotonic()``
        reaches ``when``. Only from a callback (in the monitor thread): the wait
        that is under way would not see a timer set from elsewhere."""
        if threading.current_thread() is not self._thread:
            raise RuntimeError("FdMonitor.call_at is for the monitor's own callbacks")
        heapq.heappush(self._timers, (when, next(self._order), callback))

    def _run(self) -> None:
        while True:
            timeout = _MAX_WAIT
            if self._timers:
                timeout = min(_MAX_WAIT, max(0.0, self._timers[0][0] - time.monotonic()))
            try:
                events = self._epoll.poll(timeout)
            except InterruptedError:
                continue
            except OSError as exc:  # never seen; keep watching rather than die
                if not self._failed:
                    self._failed = True
                    log.error("quiesce: the process monitor's epoll failed (%s); retrying", exc)
                time.sleep(0.05)
                continue
            woke_at = time.monotonic()
            for fd, _ in events:
                callback = self._callbacks.get(fd)
                if callback is None:
                    continue  # removed by an earlier callback of this batch
                try:
                    callback(woke_at)
                except BaseException:  # never let one worker's bug stop the others' watch
                    log.exception("quiesce: error in the process monitor (fd %d); fd dropped", fd)
                    self.remove(fd)
            while self._timers and self._timers[0][0] <= woke_at:
                _, _, callback = heapq.heappop(self._timers)
                try:
                    callback(woke_at)
                except BaseException:
                    log.exception("quiesce: error in a process monitor timer")
            # Nothing of the batch may outlive it: a callback's worker (and its token's
            # fds) must go as soon as its owner drops it, not at the next wake-up.
            events = callback = None  # type: ignore[assignment]


_instance: FdMonitor | None = None
_lock = threading.Lock()


def _get_locked(cls: type[FdMonitor]) -> FdMonitor:
    global _instance
    if _instance is None:
        _instance = cls()
    return _instance


def _after_fork_in_child() -> None:
    global _instance, _lock
    inst, _instance, _lock = _instance, None, threading.Lock()
    if inst is not None:
        try:
            inst._epoll.close()  # the parent's watches: not ours, and a leaked fd
        except OSError:
            pass


os.register_at_fork(after_in_child=_after_fork_in_child)
