"""Turning the ``mp_context`` argument of scopes and pools into a context.

Scopes and ProcessPools accept ``None`` (the default start method), a start
method name, or a ``multiprocessing`` context; both need the same checks and
the same error messages, so the conversion lives below both of them.
"""

import multiprocessing
from multiprocessing.context import BaseContext


def resolve_context(mp_context: object) -> BaseContext:
    """The context for ``mp_context``; ValueError for an unknown method, TypeError otherwise."""
    if mp_context is None:
        return multiprocessing.get_context()
    if isinstance(mp_context, str):
        try:
            return multiprocessing.get_context(mp_context)
        except ValueError:
            raise ValueError(
                f"mp_context: unknown start method {mp_context!r}; choose one of "
                f"{multiprocessing.get_all_start_methods()}"
            ) from None
    if isinstance(mp_context, BaseContext):
        return mp_context
    raise TypeError(
        "mp_context must be None, a start method name or a multiprocessing context, "
        f"not {type(mp_context).__name__}"
    )
