"""ScopeOwner: a scope as its workers see it (the ``Owner`` protocol of _worker).

Workers keep their owner for life, and a worker may outlive the scope
object (an abandoned thread, a report kept by the caller). So the owner
holds the scope weakly: a worker never keeps its scope alive, and there is
no Scope <-> Worker reference cycle for the garbage collector to break
(until it did, the scope's fds and helper threads lingered). Once the scope
is gone its ladder has run, so what a worker then asks is answered without
it: a stop request only stops the worker's token.

The scope side is the narrow ``OwningScope`` protocol, so this module does
not import the scope's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, final

from quiesce._core._token import StopToken
from quiesce._scope._worker import Worker


class OwningScope(Protocol):
    """What a ScopeOwner passes on to its scope."""

    def _stop_worker(self, worker: Worker, reason: str | None) -> None: ...

    def _worker_ended(self, worker: Worker) -> None: ...

    def _worker_changed(self) -> None: ...


@final
class ScopeOwner:
    """The ``Owner`` a scope hands its workers, holding the scope weakly.

    ``scope`` is a ``weakref.ref`` to it (called: the scope, or None once gone).
    """

    __slots__ = ("_scope", "grace", "interrupt_threads", "kill_after", "token")

    def __init__(self, scope: Callable[[], OwningScope | None], token: StopToken, grace: float,
                 kill_after: float, interrupt_threads: bool) -> None:
        self._scope = scope
        self.token = token
        self.grace = grace
        self.kill_after = kill_after
        self.interrupt_threads = interrupt_threads

    def stop_worker(self, worker: Worker, reason: str | None) -> None:
        scope = self._scope()
        if scope is not None:
            scope._stop_worker(worker, reason)
        else:  # its scope has ended: the ladder already ran; the token is all there is
            worker.token.stop(reason)

    def worker_ended(self, worker: Worker) -> None:
        scope = self._scope()
        if scope is not None:
            scope._worker_ended(worker)

    def worker_changed(self) -> None:
        scope = self._scope()
        if scope is not None:
            scope._worker_changed()
