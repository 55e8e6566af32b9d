"""shield(seconds): cleanup that must finish, with stops from above held back, but not for ever.

Inside the block ``current_token()`` is a local token that is *not* a
child of the token current before: the parent's stop (a signal, an outer
scope, an outer deadline) arms the one deadline timer to deliver that stop
``seconds`` later, with the parent's reason. If the parent is already
stopped on entry (the usual case: a ``finally`` after a stop) the
countdown starts on entry. Leaving the block unlinks it and cancels the
timer entry; the stop is then seen by the code after the block, whose
token was stopped all along. A shield never swallows anything.

``token.deadline`` inside is the parent's deadline plus ``seconds`` until
the stop arrives, then the delivery time: what the code inside can count
on.

Rejected: trio's unbounded shield as the only form (``quiesce`` promises
that every stop ends within a bound; ``shield(math.inf)`` still gives it,
explicitly); holding back signals themselves (SIGTERM's handler already
only stops tokens: holding back the token is enough and keeps a second
signal's "hurry" working for scopes).
"""

from __future__ import annotations

import functools
import time
import weakref
from types import TracebackType
from typing import final

from quiesce._core import _deadline_timer, _validate
from quiesce._core._context import CurrentReset, _current, current_token, leave_block
from quiesce._core._token import StopHandle, StopToken


@final
class Shield:
    """The block of ``quiesce.shield(seconds)``.

    Attributes:
        held_back: True if a stop from above arrived while the block ran
            (delivered inside after ``seconds``, or left for the code after
            the block).

    Made by ``quiesce.shield(seconds)``; enter it once.

    Example:
        ```python
        with quiesce.shield(2.0) as sh:
            flush()
        if sh.held_back:
            log.info("stopping after the flush")
        ```
    """

    __slots__ = ("__weakref__", "_entry", "_hold", "_link", "_open", "_parent", "_reset",
                 "_stop_seen", "_token")

    def __init__(self, hold: float | None) -> None:
        self._hold = hold
        self._open = False
        self._stop_seen = False
        self._token: StopToken | None = None
        self._parent: StopToken | None = None
        self._link: StopHandle | None = None
        self._entry: _deadline_timer.Entry | None = None
        self._reset: CurrentReset | None = None

    @property
    def held_back(self) -> bool:
        return self._stop_seen

    def __enter__(self) -> Shield:
        if self._token is not None:
            raise RuntimeError("a shield block can be entered only once")
        parent = current_token()
        token = StopToken._local()
        hold = self._hold
        above = parent._deadline
        token._deadline = None if above is None or hold is None else above + hold
        self._parent, self._token, self._open = parent, token, True
        self._link = parent.on_stop(functools.partial(_stop_arrived, weakref.ref(self)))
        self._reset = _current.set(token)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._open = False
        reset, link, entry = self._reset, self._link, self._entry
        self._reset = self._link = self._entry = None
        leave_block(reset, self._parent, link, entry)

    def __repr__(self) -> str:
        hold = "for ever" if self._hold is None else f"{self._hold:g} s"
        return f"<Shield {hold}{', holding back a stop' if self._stop_seen else ''}>"


def _stop_arrived(ref: weakref.ref[Shield]) -> None:
    """The parent stopped (in the stopping thread, or at once on entry): deliver later."""
    shield = ref()
    if shield is None or not shield._open:
        return
    shield._stop_seen = True
    token, parent = shield._token, shield._parent
    assert token is not None and parent is not None
    reason = parent.reason
    hold = shield._hold
    if hold is None:
        token._deadline = None
        return
    at = time.monotonic() + hold
    token._deadline = at
    if hold == 0:
        token.stop(reason)
        return
    token_ref = weakref.ref(token)

    def deliver() -> None:
        target = token_ref()
        if target is not None:
            target.stop(reason)

    shield._entry = _deadline_timer.call_at(at, deliver)


def shield(seconds: float) -> Shield:
    """A block whose code is not stopped from above for at most ``seconds``.

    For cleanup that must finish (flush, commit, say goodbye): inside,
    ``quiesce.current_token()`` is not stopped by a signal, an outer scope
    or an outer deadline until ``seconds`` after that stop arrived (or after
    entering, if it had arrived before); then it is, with the same reason.
    After the block, the code sees the stop as usual. Nothing is swallowed.
    Deadline blocks and scopes opened inside work as anywhere else.

    Args:
        seconds: the longest hold, >= 0; ``inf`` holds stops back for as long
            as the block runs (use with care: ``quiesce``'s bounds then rely
            on the ladder's SIGTERM/SIGKILL alone).

    Raises:
        TypeError: ``seconds`` is not a number (or is a bool).
        ValueError: ``seconds`` is negative or NaN.

    Example:
        ```python
        try:
            serve()
        finally:
            with quiesce.shield(5.0):
                db.commit()  # quiesce.sleep/wait inside are not cut short for 5 s
        ```
    """
    return Shield(_validate.limit_seconds("seconds", seconds))
