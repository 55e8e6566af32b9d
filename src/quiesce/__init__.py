"""quiesce: make multi-process and multi-thread programs terminate correctly and gracefully."""

from quiesce._context import current_token, sleep, stopped
from quiesce._errors import Stopped
from quiesce._token import StopHandle, StopToken

__all__ = [
    "StopHandle",
    "StopToken",
    "Stopped",
    "current_token",
    "sleep",
    "stopped",
]
__version__ = "0.1.0"
