"""quiesce: make multi-process and multi-thread programs terminate correctly and gracefully."""

from quiesce._core._cancel_scope import CancelScope, fail_after, fail_at, move_on_after, move_on_at
from quiesce._core._context import current_token, sleep, stopped
from quiesce._core._errors import ProcessDied, Stopped
from quiesce._core._shield import Shield, shield
from quiesce._core._token import StopHandle, StopToken
from quiesce._pools._processpool import ProcessPool
from quiesce._pools._threadpool import ThreadPool
from quiesce._proc._run_command import run_command
from quiesce._scope._entry import run
from quiesce._scope._scope import Scope
from quiesce._scope._signals import SignalHandling, handle_signals
from quiesce._scope._worker import Worker, WorkerReport

__all__ = [
    "CancelScope",
    "ProcessDied",
    "ProcessPool",
    "Scope",
    "Shield",
    "SignalHandling",
    "StopHandle",
    "StopToken",
    "Stopped",
    "ThreadPool",
    "Worker",
    "WorkerReport",
    "current_token",
    "fail_after",
    "fail_at",
    "handle_signals",
    "move_on_after",
    "move_on_at",
    "run",
    "run_command",
    "shield",
    "sleep",
    "stopped",
]
__version__ = "0.1.0"
