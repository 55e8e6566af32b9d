"""quiesce: make multi-process and multi-thread programs terminate correctly and gracefully."""

from quiesce._context import current_token, sleep, stopped
from quiesce._errors import ProcessDied, Stopped
from quiesce._scope import Scope
from quiesce._token import StopHandle, StopToken

__all__ = [
    "ProcessDied",
    "Scope",
    "StopHandle",
    "StopToken",
    "Stopped",
    "current_token",
    "sleep",
    "stopped",
]
__version__ = "0.1.0"
