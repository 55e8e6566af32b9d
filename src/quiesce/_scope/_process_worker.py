"""ProcessWorker: a multiprocessing child running a target, and its whole tree.

The target and arguments are pickled up front, whatever the start method,
so a lambda fails at ``scope.process()`` with a message naming it rather
than deep inside multiprocessing (or, under fork, never). The child reports
its outcome over a one-way pipe; a monitor thread per worker reads it while
waiting for the exit (a pidfd on Linux, so a descendant holding an
inherited sentinel cannot hide the exit), reaps, and then ends what
remains of the worker's tree: SIGTERM, then SIGKILL after ``kill_after``.

The child's whole life (start, group, pidfd, guardian, reap, remains,
signals) is one ``ProcessHandle`` (see _proc/_handle), which cannot signal
a process after it was reaped. If the monitor thread cannot be started
the child is ended at once and the error raised from ``scope.process()``.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import pickle
import signal
import threading
from multiprocessing.context import BaseContext
from typing import Any

from quiesce._core._ended_by import EndedBy
from quiesce._core._errors import ProcessDied
from quiesce._proc import _proctree
from quiesce._proc._child import RemoteTraceback, child_main
from quiesce._proc._handle import ProcessHandle
from quiesce._scope._worker import Owner, Worker

_EXIT_POLL = 0.1  # without a pidfd: how often to check that the child still runs


class ProcessWorker(Worker):
    kind = "process"

    def __init__(self, owner: Owner, name: str, payload: bytes, ctx: BaseContext) -> None:
        super().__init__(owner, name, owner.token.child())
        self._tag = _proctree.new_tag()
        self._reader, writer = ctx.Pipe(duplex=False)
        self._process = ctx.Process(  # type: ignore[attr-defined]
            target=child_main, name=name,
            args=(payload, self._token, writer, self._tag, os.getpid(), owner.kill_after),
        )
        self._writer = writer
        self._handle: ProcessHandle | None = None
        self._message: tuple[Any, ...] | None = None
        self._exitcode: int | None = None

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
        try:
            threading.Thread(target=self._monitor, name=f"quiesce-monitor-{self._name}",
                             daemon=True).start()
        except BaseException:  # no thread: end the child here rather than leave it unwatched
            self._handle.kill_tree()
            self._handle.reap()
            self._handle.end_remains(kill_after=0.0)
            self._handle.close()
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

    # -- the monitor thread ---------------------------------------------------
    def _monitor(self) -> None:
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
        try:
            self._message = pickle.loads(data)
        except Exception as exc:  # e.g. an exception class that cannot be rebuilt here
            self._message = ("failed", RuntimeError(f"cannot read the worker's outcome: {exc}"),
                             "")
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
