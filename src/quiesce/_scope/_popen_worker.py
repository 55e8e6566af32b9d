"""PopenWorker: a command started by ``scope.popen``, and its whole tree.

A command cannot see a token, so its ladder is shifted: SIGTERM to its
process group (and tagged escapers) at step 1, nothing new at step 2,
SIGKILL to the whole tree at step 3 (after grace + kill_after). A monitor
thread waits for the exit (pidfd on Linux), reaps, then ends what remains
of the tree. The command's life is one ``ProcessHandle`` (_proc/_handle):
the group is signalled by number only while its leader is provably
unreaped (under Popen's own wait lock), so a user's ``popen.wait()`` in
another thread cannot make the ladder hit a recycled number.

Any exit the command makes on its own is ``finished`` (the exit code is
the result, as ``subprocess.run`` reports it without raising); after the
stop request it is ``terminated`` or ``killed``.
"""

from __future__ import annotations

import signal
import subprocess
import threading
from typing import Any

from quiesce._proc import _command, _proctree
from quiesce._proc._handle import ProcessHandle
from quiesce._scope._worker import Owner, Worker


class PopenWorker(Worker):
    kind = "subprocess"

    def __init__(self, owner: Owner, name: str, argv: _command.Argv,
                 kwargs: dict[str, Any]) -> None:
        super().__init__(owner, name, owner.token.child())
        self._argv = argv
        self._kwargs = kwargs
        self._tag = _proctree.new_tag()
        self._handle: ProcessHandle | None = None
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
        handle, self._popen = ProcessHandle.start_command("scope.popen", self._argv, self._tag,
                                                          self._kwargs)
        self._handle = handle
        try:
            threading.Thread(target=self._monitor, args=(handle,), daemon=True,
                             name=f"quiesce-monitor-{self._name}").start()
        except BaseException:  # no thread: end the command here rather than leave it unwatched
            handle.kill_tree()
            handle.reap()
            handle.end_remains(kill_after=0.0)
            handle.close()
            raise

    # -- the ladder -----------------------------------------------------------
    def _on_stop_requested(self) -> None:
        if self._handle is not None:
            self._handle.signal_group(signal.SIGTERM)
            self._handle.signal_tree(signal.SIGTERM, include_root=False)

    def _kill(self) -> None:
        self._ladder_step = 3
        if self._handle is not None:
            self._handle.kill_tree()

    # -- the monitor thread -------------------------------------------------------
    def _monitor(self, handle: ProcessHandle) -> None:
        try:
            handle.wait_exited()
            code = handle.reap()
            handle.end_remains(kill_after=self._owner.kill_after,
                               kill_now=lambda: self._ladder_step >= 3)
        finally:
            handle.close()
        if self._ladder_step == 0:
            self._finish("finished", code)
        elif code == -signal.SIGKILL and self._ladder_step >= 3:
            self._finish("killed", code)
        else:
            self._finish("terminated", code)
