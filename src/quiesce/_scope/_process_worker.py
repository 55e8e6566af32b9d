"""ProcessWorker: a multiprocessing child running a target, and its whole tree.

The target and arguments are pickled up front, whatever the start method,
so a lambda fails at ``scope.process()`` with a message naming it rather
than deep inside multiprocessing (or, under fork, never). The child reports
its outcome over a one-way pipe; a monitor thread per worker reads it while
waiting for the exit (a pidfd on Linux, so a descendant holding an
inherited sentinel cannot hide the exit), reaps, and then ends what
remains of the worker's tree (its process group and every process carrying
its tag): SIGTERM, then SIGKILL after ``kill_after``.

Signals to the child itself go through ``_signal``, under the lock the
monitor holds while reaping: a PID is never signalled after it was reaped,
so never after it could be recycled.
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
from quiesce._proc import _launcher, _platform, _proctree
from quiesce._proc._child import RemoteTraceback, child_main
from quiesce._proc._guardian_client import Guardian
from quiesce._proc._tree_end import end_remains
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
            args=(payload, self._token, writer, self._tag, os.getpid()),
        )
        self._writer = writer
        self._lock = threading.Lock()
        self._reaped = False
        self._pidfd: int | None = None
        self._pid: int | None = None
        self._message: tuple[Any, ...] | None = None
        self._exitcode: int | None = None

    @property
    def exitcode(self) -> int | None:
        return self._exitcode

    @property
    def pid(self) -> int | None:
        return self._pid

    def _start(self) -> None:
        _launcher.launch(self._process.start)
        self._writer.close()
        pid = self._pid = self._process.pid
        assert pid is not None
        try:
            os.setpgid(pid, pid)  # also done by the child: whichever runs first wins
        except OSError:
            pass
        self._pidfd = _platform.pidfd_open(pid)
        Guardian.get().watch_group(pid)
        threading.Thread(target=self._monitor, name=f"quiesce-monitor-{self._name}",
                         daemon=True).start()

    # -- the ladder ---------------------------------------------------------
    def _signal(self, sig: int) -> None:
        with self._lock:
            if not self._reaped and self._pid is not None:
                try:
                    os.kill(self._pid, sig)
                except ProcessLookupError:
                    pass

    def _terminate(self) -> None:
        self._ladder_step = max(self._ladder_step, 2)
        self._signal(signal.SIGTERM)

    def _kill(self) -> None:
        self._ladder_step = 3
        self._signal(signal.SIGKILL)
        _proctree.signal_tree(signal.SIGKILL, root_pid=self._pid, tag=self._tag, pgid=self._pid)

    # -- the monitor thread ---------------------------------------------------
    def _monitor(self) -> None:
        try:
            self._wait_for_exit()
        finally:
            if self._pidfd is not None:
                os.close(self._pidfd)
            self._reader.close()
        self._end_remains()
        Guardian.get().unwatch_group(self._pid or 0)
        self._finish(*self._classify())

    def _wait_for_exit(self) -> None:
        exit_signal: Any = self._pidfd if self._pidfd is not None else self._process.sentinel
        waitables: list[Any] = [self._reader, exit_signal]
        timeout = None if self._pidfd is not None else _EXIT_POLL
        while True:
            ready = multiprocessing.connection.wait(waitables, timeout)
            if self._reader in ready and not self._read_message():
                waitables.remove(self._reader)
            if exit_signal in ready or (timeout is not None and not self._process.is_alive()):
                break
        while self._reader in waitables and self._reader.poll(0):
            if not self._read_message():
                break
        with self._lock:
            self._process.join()
            self._reaped = True
        self._exitcode = self._process.exitcode
        self._process.close()

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

    def _end_remains(self) -> None:
        """The rest of the ladder for descendants that outlived the worker process."""
        end_remains(tag=self._tag, pgid=self._pid, kill_after=self._owner.kill_after,
                    kill_now=lambda: self._ladder_step >= 3)

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
