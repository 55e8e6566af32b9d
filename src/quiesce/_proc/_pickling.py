"""Pickling a call for a child process up front, with an error that names it.

Whatever the start method, a process target is pickled when it is handed to
quiesce, so a lambda fails at the call that named it (``scope.process``,
``ProcessPool.submit``) rather than deep inside multiprocessing, or, under
fork, never. The caller passes its own public name for the message.
"""

import pickle
from collections.abc import Callable
from typing import Any


def pickle_target(caller: str, fn: Callable[..., Any], args: tuple[Any, ...],
                  kwargs: dict[str, Any]) -> bytes:
    """Pickle ``(fn, args, kwargs)``, or raise TypeError naming ``caller``, the target and why."""
    try:
        return pickle.dumps((fn, args, kwargs))
    except Exception as exc:
        name = getattr(fn, "__qualname__", None) or repr(fn)
        hint = ""
        if "<lambda>" in name or "<locals>" in name:
            hint = "; define it at module level (lambdas and nested functions cannot be pickled)"
        raise TypeError(
            f"{caller}: cannot send target {name!r} and its arguments to a child "
            f"process: {type(exc).__name__}: {exc}{hint}"
        ) from exc
