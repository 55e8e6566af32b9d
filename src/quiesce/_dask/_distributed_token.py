"""DistributedToken: a stop request seen by every task on every worker of a cluster.

A ``StopToken`` lives in one machine's shared memory; a cluster needs a
stop that crosses machines. The scheduler holds it: a ``distributed.Event``
named after the token (set = stopped) and a ``distributed.Variable`` beside
it for the reason, written before the event is set.

Reading ``stopped`` must stay a memory load (it is polled in hot loops), so
each process keeps one local ``StopToken`` per name, and one daemon thread
per name waits on the event (``Event.wait``, a long poll on the scheduler,
so a stop reaches every holder within a round trip) and stops the local
token; ``wait``, ``fileno``, ``on_stop`` and ``child`` are the local
token's. The thread waits in slices and ends once no token of that name is
left in the process, or the client closes.

Pickling sends only the name: the copy in a task finds its client with
``distributed.get_client()`` (the worker's client) the first time it is
used, not while being unpickled (which may happen on the worker's event
loop, before the task runs).

Rejected: calling ``Event.is_set()`` on every ``stopped`` (a scheduler round
trip, ~1 ms); pub/sub (``Pub``/``Sub``: a message sent before a subscriber
exists is lost, so a task started after the stop would miss it).
"""

from __future__ import annotations

import logging
import threading
import uuid
import weakref
from collections.abc import Callable
from typing import Any, final

import distributed

from quiesce._core._errors import Stopped
from quiesce._core._token import StopHandle, StopToken

log = logging.getLogger("quiesce")
_Event: Any = distributed.Event  # distributed's API is untyped
_Variable: Any = distributed.Variable

WATCH_SLICE = 2.0  # seconds per long poll: how long a watcher may outlive its last token

_locals: weakref.WeakValueDictionary[str, StopToken] = weakref.WeakValueDictionary()
_locals_lock = threading.Lock()


@final
class DistributedToken:
    """A stop token whose stop is seen by every task, on every worker, that holds it.

    It has `StopToken`'s interface (`stop`, `stopped`, `reason`, `wait`,
    `raise_if_stopped`, `on_stop`, `child`, `fileno`) and pickles into dask
    tasks (only its name travels). Stopping it anywhere (the client, a
    task, another client of the same scheduler) stops every copy within
    about one scheduler round trip; `stopped` is a local memory read. Where
    a `StopToken` is required (`Scope(token=...)`), pass `token.child()`.

    Args:
        name: The name on the scheduler; tokens with the same name are the
            same token. None: a fresh unique name.
        client: The `distributed.Client` to use. None:
            `distributed.get_client()` when first needed (inside a task, the
            worker's client).

    Raises:
        TypeError: `name` is not a str, or `client` not a `distributed.Client`.
        ValueError: `name` is empty; or, when first used, no client can be
            found.

    Example:
        ```python
        import quiesce.dask

        def crawl(site, token):
            while not token.stopped:         # a memory read
                ...

        token = quiesce.dask.DistributedToken()
        futures = client.map(crawl, sites, token=token, pure=False)
        token.stop("enough")                 # every crawl on every worker sees it
        ```
    """

    __slots__ = ("__weakref__", "_client", "_local", "_name")

    def __init__(self, name: str | None = None, client: distributed.Client | None = None) -> None:
        if name is not None and not isinstance(name, str):
            raise TypeError(f"name must be a str or None, not {type(name).__name__}")
        if name == "":
            raise ValueError("name must not be empty (None: a fresh unique name)")
        if client is not None and not isinstance(client, distributed.Client):
            raise TypeError(f"client must be a distributed.Client or None, "
                            f"not {type(client).__name__}")
        self._name = name or f"quiesce-token-{uuid.uuid4().hex}"
        self._client = client
        self._local: StopToken | None = None

    @property
    def name(self) -> str:
        """The token's name on the scheduler."""
        return self._name

    # -- the request -----------------------------------------------------------------------
    def stop(self, reason: str | None = None) -> None:
        """Stop every copy of this token, everywhere; idempotent, the first reason is kept."""
        if reason is not None and not isinstance(reason, str):
            raise TypeError(f"reason must be a str or None, not {type(reason).__name__}")
        local = self._token()
        if not local.stopped:
            client = self._get_client()
            event = _Event(self._name, client=client)
            if not event.is_set():
                _Variable(_reason_name(self._name), client=client).set(reason or "")
                event.set()
        local.stop(reason)

    @property
    def stopped(self) -> bool:
        """Whether stopped (a memory read, fit for a hot loop, after the first call)."""
        local = self._local
        return (local if local is not None else self._token()).stopped

    @property
    def reason(self) -> str | None:
        """The reason given to the first `stop()`, once this process has seen it."""
        return self._token().reason

    def wait(self, timeout: float | None = None) -> bool:
        """Sleep until stopped (True) or until ``timeout`` seconds pass (False)."""
        return self._token().wait(timeout)

    def raise_if_stopped(self) -> None:
        """Raise ``quiesce.Stopped`` if stopped."""
        local = self._token()
        if local.stopped:
            raise Stopped(local.reason)

    def on_stop(self, callback: Callable[[], object]) -> StopHandle:
        """Run ``callback()`` once, in this process, when the token stops (at once if stopped)."""
        return self._token().on_stop(callback)

    def child(self) -> StopToken:
        """A local ``StopToken`` that stops when this one does (never the reverse)."""
        return self._token().child()

    def fileno(self) -> int:
        """An fd that becomes readable once the token is stopped (for select)."""
        return self._token().fileno()

    def __reduce__(self) -> tuple[Any, ...]:
        return (DistributedToken, (self._name,))

    def __repr__(self) -> str:
        local = self._local
        state = "running" if local is None or not local.stopped else \
            f"stopped reason={local.reason!r}"
        return f"<DistributedToken {self._name!r} {state}>"

    # -- the local side -----------------------------------------------------------------------
    def _get_client(self) -> distributed.Client:
        if self._client is None:
            try:
                self._client = distributed.get_client()
            except ValueError as exc:
                raise ValueError(f"DistributedToken {self._name!r} needs a dask client: pass "
                                 "client=, or use it where distributed.get_client() finds "
                                 "one (a task, or after creating a Client)") from exc
        return self._client

    def _token(self) -> StopToken:
        """This process's local token for the name, watched by one thread per name."""
        local = self._local
        if local is not None:
            return local
        client = self._get_client()
        with _locals_lock:
            local = _locals.get(self._name)
            if local is None:
                local = StopToken._local()  # ~0.5 us, an fd only if fileno() asks
                _locals[self._name] = local
                threading.Thread(target=_watch, args=(self._name, weakref.ref(local), client),
                                 name=f"quiesce-dask-token-{self._name[-8:]}",
                                 daemon=True).start()
        self._local = local
        return local


def _reason_name(name: str) -> str:
    return f"{name}-reason"


def _watch(name: str, ref: weakref.ref[StopToken], client: distributed.Client) -> None:
    """Stop the local token of ``name`` once the scheduler's event is set."""
    event = _Event(name, client=client)
    while True:
        local = ref()
        if local is None or local.stopped:
            return
        del local
        try:
            if event.wait(timeout=WATCH_SLICE):
                break
        except Exception as exc:
            if client.status not in ("running", "connecting"):
                return  # the client closed: nothing more can reach us
            log.debug("quiesce: waiting on DistributedToken %r: %r", name, exc)
    reason: str | None = None
    try:
        reason = _Variable(_reason_name(name), client=client).get(timeout=5) or None
    except Exception:
        reason = None
    local = ref()
    if local is not None:
        local.stop(reason or f"DistributedToken {name!r} stopped")
