"""Whether a target takes the worker's token: decided where the target is handed over.

A target that declares a parameter named ``token`` gets its worker's (or
task's) token. The answer comes from ``inspect.signature``, whose import
(inspect, ast, dis, tokenize, linecache: ~14 ms, and their memory) is why
this is a module of its own: the owner asks, at ``scope.process()``, and
sends the answer with the payload, so a quiesce child process never
imports inspect. Thread workers and pools ask in the process that runs
the task, which has it imported by then (this module imports it at the
top: never lazily in a thread, where a concurrent fork could copy its
import lock held).
"""

from __future__ import annotations

import functools
import inspect


def wants_token(fn: object) -> bool:
    """Whether ``fn`` declares a parameter named ``token`` (it then gets the worker's).

    Cached: pools ask once per task, and inspect.signature costs ~10 us.
    """
    try:
        return _wants_token_cached(fn)
    except TypeError:  # unhashable callable
        return _wants_token(fn)


def _wants_token(fn: object) -> bool:
    try:
        parameters = inspect.signature(fn).parameters  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
    return "token" in parameters


_wants_token_cached = functools.lru_cache(maxsize=512)(_wants_token)
