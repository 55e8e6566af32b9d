"""quiesce: make multi-process and multi-thread programs terminate correctly and gracefully."""

from quiesce._context import current_token, sleep, stopped
from quiesce._entry import run
from quiesce._errors import ProcessDied, Stopped
from quiesce._processpool import ProcessPool
from quiesce._run_command import run_command
from quiesce._scope import Scope
from quiesce._signals import SignalHandling, handle_signals
from quiesce._threadpool import ThreadPool
from quiesce._token import StopHandle, StopToken
from quiesce._worker import Worker, WorkerReport

__all__ = [
    "ProcessDied",
    "ProcessPool",
    "Scope",
    "SignalHandling",
    "StopHandle",
    "StopToken",
    "Stopped",
    "ThreadPool",
    "Worker",
    "WorkerReport",
    "current_token",
    "handle_signals",
    "run",
    "run_command",
    "sleep",
    "stopped",
]
__version__ = "0.1.0"
