"""PopenWorker: a command started by ``scope.popen``, and its whole tree.

A command cannot see a token, so its ladder is shifted: SIGTERM to its
process group (and tagged escapers) at step 1, nothing new at step 2,
SIGKILL to the whole tree at step 3 (after grace + kill_after). A monitor
thread waits for the exit (pidfd on Linux), reaps under the lock that
``_signal`` takes, so the group leader's PID is never signalled once it
could be recycled, then ends what remains of the tree.

Any exit the command makes on its own is ``finished`` (the exit code is
the result, as ``subprocess.run`` reports it without raising); after the
stop request it is ``terminated`` or ``killed``.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import threading
from typing import Any

import psutil

from quiesce._proc import _command, _platform, _proctree
from quiesce._proc._guardian_client import Guardian
from quiesce._proc._tree_end import end_remains
from quiesce._scope._worker import Owner, Worker


class PopenWorker(Worker):
    kind = "subprocess"

    def __init__(self, owner: Owner, name: str, argv: _command.Argv,
                 kwargs: dict[str, Any]) -> None:
        super().__init__(owner, name, owner.token.child())
        self._argv = argv
        self._kwargs = kwargs
        self._tag = _proctree.new_tag()
        self._lock = threading.Lock()
        self._reaped = False
        self._popen: subprocess.Popen[Any] | None = None

    @property
    def popen(self) -> subprocess.Popen[Any]:
        """The ``subprocess.Popen`` (for its pipes; let the scope wait and signal it)."""
        assert self._popen is not None
        return self._popen

    @property
    def pid(self) -> int | None:
        return None if self._popen is None else self._popen.pid

    @property
    def exitcode(self) -> int | None:
        return None if self._popen is None else self._popen.returncode

    def _start(self) -> None:
        self._popen = _command.start("scope.popen", self._argv, self._tag, self._kwargs)
        pidfd = _platform.pidfd_open(self._popen.pid)
        threading.Thread(target=self._monitor, args=(pidfd,), daemon=True,
                         name=f"quiesce-monitor-{self._name}").start()

    # -- the ladder -----------------------------------------------------------
    def _signal_group(self, sig: int) -> None:
        with self._lock:
            if not self._reaped and self._popen is not None:
                _command.signal_group(self._popen.pid, sig)
        _proctree.signal_tree(sig, tag=self._tag)

    def _on_stop_requested(self) -> None:
        self._signal_group(signal.SIGTERM)

    def _kill(self) -> None:
        self._ladder_step = 3
        self._signal_group(signal.SIGKILL)
        if self._popen is not None:
            _proctree.signal_tree(signal.SIGKILL, root_pid=self._popen.pid, tag=self._tag)

    # -- the monitor thread -------------------------------------------------------
    def _monitor(self, pidfd: int | None) -> None:
        proc = self._popen
        assert proc is not None
        _wait_exited(proc, pidfd)
        with self._lock:
            proc.wait()
            self._reaped = True
        end_remains(tag=self._tag, pgid=proc.pid, kill_after=self._owner.kill_after,
                    kill_now=lambda: self._ladder_step >= 3)
        Guardian.get().unwatch_group(proc.pid)
        code = proc.returncode
        if self._ladder_step == 0:
            self._finish("finished", code)
        elif code == -signal.SIGKILL and self._ladder_step >= 3:
            self._finish("killed", code)
        else:
            self._finish("terminated", code)


def _wait_exited(proc: subprocess.Popen[Any], pidfd: int | None) -> None:
    """Block until ``proc`` has exited, without reaping it."""
    if pidfd is not None:
        select.select([pidfd], [], [])
        os.close(pidfd)
    elif hasattr(os, "waitid"):
        os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
    else:  # e.g. macOS: poll without reaping, so _signal_group can still trust the PID
        while _running(proc.pid):
            threading.Event().wait(0.05)


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False
