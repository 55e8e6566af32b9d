"""Every scope still open in this process, for the two moments that need them all.

At interpreter exit (``threading._register_atexit``, which runs before the
interpreter joins non-daemon threads and multiprocessing's children) every
open scope is stopped and its ladder waited for, so nothing a scope started
outlives the program even when a block was never left (an exception in a
generator, ``os._exit`` aside). A second signal under ``handle_signals``
hurries every open scope's ladder past the rest of its grace.

The set holds scopes weakly: a scope dropped without being entered (or one
whose block was left) costs nothing here. A forked child starts with an
empty set: the copies of its parent's scopes own nothing in it.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from typing import Protocol

log = logging.getLogger("quiesce")


class LiveScope(Protocol):
    """What this registry asks of a scope."""

    name: str

    def _end_at_exit(self) -> None: ...

    def _hurry_ladder(self) -> None: ...


_live: weakref.WeakSet[LiveScope] = weakref.WeakSet()


def add(scope: LiveScope) -> None:
    _live.add(scope)


def discard(scope: LiveScope) -> None:
    _live.discard(scope)


def live_scopes() -> list[LiveScope]:
    """The open scopes of this process (a copy)."""
    return list(_live)


def hurry_all_scopes() -> None:
    """Every live scope skips the rest of its grace (used by a second signal)."""
    for scope in live_scopes():
        scope._hurry_ladder()


def _stop_all_at_exit() -> None:
    """Before the interpreter joins threads and processes: end every open scope."""
    for scope in live_scopes():
        try:
            scope._end_at_exit()
        except Exception:
            log.exception("quiesce: stopping scope %r at exit failed", scope.name)


def _forget_inherited_scopes() -> None:
    # A forked child holds copies of its parent's scopes: they own nothing here.
    global _live
    _live = weakref.WeakSet()


threading._register_atexit(_stop_all_at_exit)  # type: ignore[attr-defined]
os.register_at_fork(after_in_child=_forget_inherited_scopes)
