"""The "quiesce" logger for modules a child process imports: logging on first use.

Every quiesce child process imports the token modules, which log only
when something went wrong (a callback raised, the watcher failed).
Importing logging there up front (with traceback, linecache, tokenize,
string: ~4 ms, and memory the kernel must free again at the exit) was a
cost paid by every child for lines almost none writes. ``log`` has the
logger's methods these modules use and imports logging when one is first
called.

The import may then run in a helper thread. A fork made by another thread
of the same process at that very moment would copy logging's import lock
held, and a child that then imported logging would hang; but an owner
that starts processes with quiesce has imported logging long before (the
scope and pool modules import it), and in a quiesce child this happens
only on an error path. Modules that the owner alone imports use
``logging.getLogger`` directly.
"""

from __future__ import annotations

from typing import Any


class _LazyLogger:
    """The methods of ``logging.getLogger("quiesce")`` that _core uses, imported on call."""

    __slots__ = ()

    def exception(self, msg: str, *args: Any) -> None:
        _logger().exception(msg, *args)

    def warning(self, msg: str, *args: Any) -> None:
        _logger().warning(msg, *args)


def _logger() -> Any:
    import logging

    return logging.getLogger("quiesce")


log = _LazyLogger()
