"""quiesce: make multi-process and multi-thread Python programs terminate correctly and gracefully.

Public names are imported on first use (PEP 562 ``__getattr__``), so that
``import quiesce`` and the ``quiesce`` command (which imports only
``quiesce._cli``) do not pay for pools, scopes and psutil they do not use.
To add a public name: one entry in ``_LAZY`` (name -> module), one import
under ``TYPE_CHECKING`` (for type checkers and IDEs) and one in ``__all__``.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from quiesce._core._cancel_scope import (
        CancelScope,
        fail_after,
        fail_at,
        move_on_after,
        move_on_at,
    )
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

_LAZY = {
    "CancelScope": "quiesce._core._cancel_scope",
    "fail_after": "quiesce._core._cancel_scope",
    "fail_at": "quiesce._core._cancel_scope",
    "move_on_after": "quiesce._core._cancel_scope",
    "move_on_at": "quiesce._core._cancel_scope",
    "current_token": "quiesce._core._context",
    "sleep": "quiesce._core._context",
    "stopped": "quiesce._core._context",
    "ProcessDied": "quiesce._core._errors",
    "Stopped": "quiesce._core._errors",
    "Shield": "quiesce._core._shield",
    "shield": "quiesce._core._shield",
    "StopHandle": "quiesce._core._token",
    "StopToken": "quiesce._core._token",
    "ProcessPool": "quiesce._pools._processpool",
    "ThreadPool": "quiesce._pools._threadpool",
    "run_command": "quiesce._proc._run_command",
    "run": "quiesce._scope._entry",
    "Scope": "quiesce._scope._scope",
    "SignalHandling": "quiesce._scope._signals",
    "handle_signals": "quiesce._scope._signals",
    "Worker": "quiesce._scope._worker",
    "WorkerReport": "quiesce._scope._worker",
}

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


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'quiesce' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # next time a plain attribute: no function call
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
