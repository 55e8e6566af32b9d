"""ProcessWorker: a multiprocessing child running a target, and its whole tree.

The target and arguments are pickled up front, whatever the start method,
so a lambda fails at ``scope.process()`` with a message naming it rather
than deep inside multiprocessing (or, under fork, never). The child reports
its outcome over a one-way pipe. The child's whole life (start, group,
pidfd, guardian, reap, remains, signals) is one ``ProcessHandle`` (see
_proc/_handle), which cannot signal a process after it was reaped.

Watching, with a pidfd (Linux 5.3+): the process's one monitor thread
(_proc/_fd_monitor) waits on every worker's pipe and pidfd. The pipe is
read without blocking as data comes (a result bigger than the pipe's
buffer is written while the child runs), the pidfd tells the exit (a
descendant holding the pipe or the sentinel cannot hide it). Then, in the
monitor: whatever is in the pipe is read, ``left_nothing`` asks whether the
child left any descendant (a few small /proc files, one read for all
the exits it serves), and the child is reaped without blocking (under
the fork server its status arrives a moment later, on the sentinel, which
the monitor then watches). Anything slow goes to a thread of its own:
ending what the child left behind (SIGTERM, then SIGKILL after
``kill_after``), and recording a failure (it stops the scope, and user
callbacks run in the stopping thread). If that thread cannot start, the
remains are killed at once in the monitor, so it stays bounded.

Exits held for one read: the read must begin after the exits it serves,
and when a scope stops its workers their exits are spread over several
milliseconds, so one read per wake-up meant about one per worker (each
~0.3-0.5 ms of the owner's CPU, while the children it waits for tear
down on the same cores). So an exit's read waits while another worker of
the same scope was told to stop (its token is stopped) and has not exited
yet; the last such exit, or a timer ``_Held.HOLD`` (20 ms) after the
batch's first exit, reads once for the whole batch. The hold covers the
spread of eight exits on two busy cores (6-10 ms): at 5 ms a second read
followed in half the scope exits, and the monitor spent 0.8-1.1 ms of CPU
a scope exit on reads, against 0.69-0.71 ms at 20 ms (three runs each,
``time.thread_time`` of the monitor, 2026-11-30). Bounded: a sibling
that ignores its stop delays the others' end by the hold at most, and a
held worker's root has already exited, so the ladder's steps on it are
harmless. Workers that end on their own (not stopped) are never held.
Rejected: a fixed delay after every exit (a lone worker would pay it);
holding until every sibling exits (one that ignores its stop would hold
the others until the ladder ends it).

Without a pidfd, a thread per worker waits (sentinel and 100 ms polls),
reaps and ends the remains, as before. If the monitor (or that thread)
cannot be started, the child is ended at once and the error raised from
``scope.process()``.
"""

from __future__ import annotations

import errno
import logging
import multiprocessing
import multiprocessing.connection
import os
import pickle
import signal
import struct
import threading
from multiprocessing.context import BaseContext
from typing import Any

from quiesce._core._ended_by import EndedBy
from quiesce._core._errors import ProcessDied
from quiesce._core._token import StopToken
from quiesce._proc import _proctree
from quiesce._proc._child import RemoteTraceback, child_main
from quiesce._proc._fd_monitor import FdMonitor
from quiesce._proc._handle import ProcessHandle
from quiesce._scope._worker import Owner, Worker

_EXIT_POLL = 0.1  # without a pidfd: how often to check that the child still runs
log = logging.getLogger("quiesce")


class ProcessWorker(Worker):
    kind = "process"

    def __init__(self, owner: Owner, name: str, payload: bytes, ctx: BaseContext, *,
                 tokens: list[StopToken], pass_token: bool) -> None:
        """``payload``, ``tokens``: (fn, args, kwargs) from ``_pickling.pickle_call``;
        ``pass_token``: whether fn gets ``token=`` (asked in the owner: the child never
        imports inspect)."""
        super().__init__(owner, name, owner.token.child())
        self._tag = _proctree.new_tag()
        self._reader, writer = ctx.Pipe(duplex=False)
        self._process = ctx.Process(  # type: ignore[attr-defined]
            target=child_main, name=name,
            args=(payload, tokens, pass_token, self._token, writer, self._tag, os.getpid(),
                  owner.kill_after),
        )
        self._writer = writer
        self._handle: ProcessHandle | None = None
        self._message: tuple[Any, ...] | None = None
        self._exitcode: int | None = None
        self._frames = _Frames()
        self._monitor: FdMonitor | None = None
        self._watched: list[int] = []

    @property
    def exitcode(self) -> int | None:
        return self._exitcode

    @property
    def pid(self) -> int | None:
        return None if self._handle is None else self._handle.pid

    def _start(self) -> None:
        try:
            self._handle = ProcessHandle.start_process(self._process, self._tag)
        except BaseException:
            self._reader.close()
            raise
        finally:
            self._writer.close()
        handle = self._handle
        try:
            if handle.has_pidfd:
                self._watch(handle)
            else:
                threading.Thread(target=self._monitor_thread, daemon=True,
                                 name=f"quiesce-monitor-{self._name}").start()
        except BaseException:  # no watcher: end the child here rather than leave it unwatched
            self._unwatch()
            handle.kill_tree()
            handle.reap()
            handle.end_remains(kill_after=0.0)
            handle.close()
            self._reader.close()
            raise

    # -- the ladder ---------------------------------------------------------
    def _terminate(self) -> None:
        self._ladder_step = max(self._ladder_step, 2)
        if self._handle is not None:
            self._handle.signal(signal.SIGTERM)
            self._handle.signal(signal.SIGCONT)  # a stopped child handles it now, not at SIGKILL

    def _kill(self) -> None:
        self._ladder_step = 3
        if self._handle is not None:
            self._handle.kill_tree()

    # -- watched by the shared monitor (pidfd) ---------------------------------
    def _watch(self, handle: ProcessHandle) -> None:
        monitor = self._monitor = FdMonitor.get()
        fd = self._reader.fileno()
        os.set_blocking(fd, False)  # read as data comes, never waiting for the rest
        self._watched.append(fd)
        monitor.add(fd, self._on_readable)
        self._watched.append(handle.exit_fd)  # after the pipe: the exit drains it
        with _running_lock:
            _running[self] = None
        monitor.add(handle.exit_fd, self._on_exit)

    def _unwatch(self, fd: int | None = None) -> None:
        if fd is None:
            with _running_lock:
                _running.pop(self, None)
        for watched in list(self._watched) if fd is None else [fd]:
            if watched in self._watched:
                self._watched.remove(watched)
                if self._monitor is not None:
                    self._monitor.remove(watched)

    def _on_readable(self, woke_at: float) -> None:
        if not self._read_available():
            self._unwatch(self._reader.fileno())  # EOF: the child closed its end

    def _read_available(self) -> bool:
        """Read what the pipe holds now; False at EOF (or an error)."""
        fd = self._reader.fileno()
        while True:
            try:
                data = os.read(fd, 65536)
            except BlockingIOError:
                return True
            except OSError as exc:
                return exc.errno == errno.EINTR
            if not data:
                return False
            for frame in self._frames.feed(data):
                self._message = _load(frame)

    def _on_exit(self, woke_at: float) -> None:
        handle = self._handle
        assert handle is not None
        if not handle.has_exited():
            return  # a stale event for a reused fd number: not our exit
        self._read_available()  # all the child wrote is there: it wrote before exiting
        self._unwatch()
        self._reader.close()
        _held.add(self, woke_at)

    def _after_exit(self, since: float) -> None:
        """The rest of ``_on_exit``, once the walk is due (exit seen before ``since``)."""
        handle = self._handle
        assert handle is not None
        if not handle.left_nothing(since):
            self._in_thread(self._end_remains_then_finish, inline=self._kill_remains_then_finish)
        elif handle.try_reap():
            self._finish_reaped()
        elif handle.reap_fd is not None and self._monitor is not None:
            fd = handle.reap_fd  # the fork server writes the status there after its reap
            self._watched.append(fd)
            self._monitor.add(fd, self._on_reapable)
        else:
            self._in_thread(self._end_remains_then_finish, inline=self._kill_remains_then_finish)

    def _on_reapable(self, woke_at: float) -> None:
        handle = self._handle
        assert handle is not None
        self._unwatch()
        if handle.try_reap():
            self._finish_reaped()
        else:  # readable yet no status: let a thread wait for it
            self._in_thread(self._end_remains_then_finish, inline=self._kill_remains_then_finish)

    def _finish_reaped(self) -> None:
        handle = self._handle
        assert handle is not None
        self._exitcode = handle.exitcode
        handle.end_remains(kill_after=0.0)  # nothing left: returns at once
        handle.close()
        outcome = self._classify()
        if outcome[0] == "failed":  # stops the scope: user callbacks run in this thread
            self._in_thread(lambda: self._finish(*outcome), inline=lambda: self._finish(*outcome))
        else:
            self._finish(*outcome)

    def _in_thread(self, fn: Any, *, inline: Any) -> None:
        try:
            threading.Thread(target=fn, name=f"quiesce-end-{self._name}", daemon=True).start()
        except BaseException:  # no thread: the bounded way, here
            inline()

    def _end_remains_then_finish(self, *, at_once: bool = False) -> None:
        """Reap, end what the tree left (by the ladder, or at once: SIGKILL), record the end."""
        handle = self._handle
        assert handle is not None
        try:
            self._exitcode = handle.reap()
            if at_once:
                handle.end_remains(kill_after=0.0)
            else:
                handle.end_remains(kill_after=self._owner.kill_after,
                                   kill_now=lambda: self._ladder_step >= 3)
        finally:
            handle.close()
        self._finish(*self._classify())

    def _kill_remains_then_finish(self) -> None:
        self._end_remains_then_finish(at_once=True)

    # -- a thread of its own (no pidfd) ---------------------------------------------
    def _monitor_thread(self) -> None:
        handle = self._handle
        assert handle is not None
        try:
            try:
                self._wait_for_exit(handle)
            finally:
                self._reader.close()
            self._exitcode = handle.reap()
            handle.end_remains(kill_after=self._owner.kill_after,
                               kill_now=lambda: self._ladder_step >= 3)
        finally:
            handle.close()
        self._finish(*self._classify())

    def _wait_for_exit(self, handle: ProcessHandle) -> None:
        exit_signal = handle.exit_fd
        waitables: list[Any] = [self._reader, exit_signal]
        timeout = None if handle.has_pidfd else _EXIT_POLL
        while True:
            ready = multiprocessing.connection.wait(waitables, timeout)
            if self._reader in ready and not self._read_message():
                waitables.remove(self._reader)
            if exit_signal in ready or (timeout is not None and handle.has_exited()):
                break
        while self._reader in waitables and self._reader.poll(0):
            if not self._read_message():
                break
        handle.wait_exited()

    def _read_message(self) -> bool:
        try:
            data = self._reader.recv_bytes()
        except (EOFError, OSError):
            return False
        self._message = _load(data)
        return True

    def _classify(self) -> tuple[EndedBy, Any, BaseException | None]:
        code = self._exitcode
        message = self._message
        if code == -signal.SIGKILL and self._ladder_step >= 3:
            return ("killed", None, None)
        if code == -signal.SIGTERM and self._ladder_step >= 2:
            return ("terminated", None, None)
        if message is None:
            return ("failed", None, ProcessDied(self._name, code))
        kind = message[0]
        if kind == "ok":
            return ("stopped" if self._token.stopped else "finished", message[1], None)
        if kind == "ok-unpicklable":
            return ("stopped" if self._token.stopped else "finished", None, None)
        if kind == "stopped":
            return ("terminated" if message[2] else "stopped", None, None)
        exc: BaseException = message[1]
        if message[2]:
            exc.__cause__ = RemoteTraceback(message[2])
        return ("failed", None, exc)


class _Held:
    """Exits whose walk waits for their stopping siblings (see the module note).

    Touched only in the monitor thread. The first exit of a batch sets a
    timer ``HOLD`` seconds on: whatever is held then is walked for, whether
    its siblings have exited or not.
    """

    HOLD = 0.02

    def __init__(self) -> None:
        self.workers: list[ProcessWorker] = []
        self.last = 0.0  # when the newest exit held was seen
        self.batch = 0  # counts the batches: a timer flushes only its own

    def add(self, worker: ProcessWorker, woke_at: float) -> None:
        """Hold ``worker`` (its exit seen before ``woke_at``) while a sibling of any
        held worker was told to stop and has not exited; else walk for all now."""
        self.workers.append(worker)
        self.last = max(self.last, woke_at)
        owners = {id(w._owner) for w in self.workers}
        with _running_lock:
            _running.pop(worker, None)
            waiting = any(id(w._owner) in owners and w._token.stopped for w in _running)
        if not waiting or worker._monitor is None:
            self.flush()
        elif len(self.workers) == 1:
            batch = self.batch
            worker._monitor.call_at(woke_at + self.HOLD,
                                    lambda _: self.flush() if self.batch == batch else None)

    def flush(self) -> None:
        """One walk, begun now, for every exit held (each was seen before ``last``)."""
        workers, self.workers = self.workers, []
        self.batch += 1
        for worker in workers:
            try:
                worker._after_exit(self.last)
            except BaseException:  # the others go on; this one ends the way that scans
                log.exception("quiesce: error in the process monitor (worker %s)", worker.name)
                worker._in_thread(worker._end_remains_then_finish,
                                  inline=worker._kill_remains_then_finish)


_held = _Held()
_running: dict[ProcessWorker, None] = {}  # watched by the monitor, exit not yet seen
_running_lock = threading.Lock()


def _after_fork_in_child() -> None:
    global _held, _running_lock
    _held, _running_lock = _Held(), threading.Lock()  # the parent's workers: not ours
    _running.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _load(data: bytes) -> tuple[Any, ...]:
    try:
        message: tuple[Any, ...] = pickle.loads(data)
    except Exception as exc:  # e.g. an exception class that cannot be rebuilt here
        message = ("failed", RuntimeError(f"cannot read the worker's outcome: {exc}"), "")
    return message


class _Frames:
    """Splits a byte stream into ``Connection.send_bytes`` messages: a 4-byte
    big-endian length (-1: an 8-byte length follows), then the bytes."""

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        self._buffer += data
        frames = []
        while True:
            buf = self._buffer
            if len(buf) < 4:
                break
            (size,) = struct.unpack_from("!i", buf)
            start = 4
            if size == -1:
                if len(buf) < 12:
                    break
                (size,) = struct.unpack_from("!Q", buf, 4)
                start = 12
            if len(buf) < start + size:
                break
            frames.append(bytes(buf[start:start + size]))
            del buf[:start + size]
        return frames
