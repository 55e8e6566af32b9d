"""handle_signals(): the first SIGINT/SIGTERM stops the root token, the next one hurries.

Why a root token rather than an exception: every scope's token descends
from it, so one stop reaches every worker of the process, each by its own
ladder, and code that polls ``quiesce.stopped()`` or sleeps in
``quiesce.sleep()`` wakes at once. ``force_after`` more signals skip the
remaining grace of every live scope (a user pressing Ctrl-C twice).

Handlers are Python-level (``signal.signal``), so they run in the main
thread only and only there can they be installed: elsewhere a clear
RuntimeError. The work itself runs on a helper thread (see _deferred).

Rejected: ``signal.set_wakeup_fd`` plus a reader thread (there is one
wakeup fd per process and asyncio owns it when a loop runs);
``sigwait``/signalfd on a dedicated thread (the signals would have to be
blocked in every thread, including those the user starts before us, and a
blocked mask is inherited by every child process we would start).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterable
from types import FrameType, TracebackType
from typing import Any, final

from quiesce._core import _deferred
from quiesce._core._context import root_token
from quiesce._core._errors import Stopped
from quiesce._core._validate import signal_number
from quiesce._scope._live_scopes import hurry_all_scopes

_Handler = Callable[[int, FrameType | None], Any] | int | None
_UNCATCHABLE = {signal.SIGKILL, signal.SIGSTOP}


@final
class SignalHandling:
    """Signal handlers installed by `handle_signals`; a context manager that restores the old ones.

    Returned by `handle_signals`; not meant to be constructed directly.

    Example:
        ```python
        with quiesce.handle_signals() as handling:
            run_the_job()
        if handling.received:
            print("ended by", handling.received[0].name)
        ```
    """

    def __init__(self, signals: Iterable[object], force_after: int,
                 interrupt_main: Callable[[], bool] | None = None) -> None:
        self._signals = _check_signals(signals)
        if isinstance(force_after, bool) or not isinstance(force_after, int) or force_after < 1:
            raise ValueError(f"force_after must be an int >= 1, got {force_after!r}")
        self._force_after = force_after
        self._interrupt_main = interrupt_main
        self._previous: dict[signal.Signals, _Handler] = {}
        self._received: list[signal.Signals] = []
        self._installed = False

    @property
    def received(self) -> list[signal.Signals]:
        """The signals received so far, in order (a copy)."""
        return list(self._received)

    @property
    def first_signal(self) -> signal.Signals | None:
        """The first signal received (the one that stopped the root token), or None."""
        return self._received[0] if self._received else None

    def install(self) -> SignalHandling:
        """Install the handlers (`handle_signals` already did).

        Returns:
            This object.

        Raises:
            RuntimeError: Called off the main thread, or already installed.
        """
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError(
                "quiesce.handle_signals() must be called from the main thread (Python runs "
                f"signal handlers only there); it was called from "
                f"{threading.current_thread().name!r}"
            )
        if self._installed:
            raise RuntimeError("these signal handlers are already installed")
        _deferred.start()
        root_token()  # create it now, not inside a handler
        for sig in self._signals:
            self._previous[sig] = signal.signal(sig, self._on_signal)
        self._installed = True
        return self

    def restore(self) -> None:
        """Put back the handlers that were there before (idempotent).

        Leaving the `with` block calls it. The root token stays stopped if a
        signal stopped it.
        """
        if not self._installed:
            return
        for sig, previous in self._previous.items():
            signal.signal(sig, previous if previous is not None else signal.SIG_DFL)
        self._previous.clear()
        self._installed = False

    def __enter__(self) -> SignalHandling:
        if not self._installed:
            self.install()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.restore()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        sig = signal.Signals(signum)
        self._received.append(sig)
        if len(self._received) == 1:
            reason = f"received {sig.name}"
            _deferred.call_soon(lambda: root_token().stop(reason))
            if self._interrupt_main is not None and self._interrupt_main():
                raise Stopped(reason)
        elif len(self._received) > self._force_after:
            _deferred.call_soon(hurry_all_scopes)


def handle_signals(signals: Iterable[object] = (signal.SIGINT, signal.SIGTERM), *,
                   force_after: int = 1) -> SignalHandling:
    """Turn stop signals into a graceful shutdown; use as a call or a context manager.

    The first of `signals` stops the process's root token, the ancestor of
    every scope's token made outside another scope: every scope runs its
    ladder, and code waiting in `quiesce.sleep` / `token.wait` or polling
    `quiesce.stopped()` sees the stop at once. After `force_after` more
    signals, every live scope skips what remains of its grace and kill_after
    (a user pressing Ctrl-C twice). The handlers are restored on leaving the
    `with` block, or by `restore()`.

    Unlike the default SIGTERM action, nothing dies on the spot: `finally`
    blocks, `atexit` and buffered output all run. `quiesce.run` calls this
    for you and also exits with the conventional status.

    Args:
        signals: Signals to handle: `signal.Signals`, numbers or names
            (`"TERM"`, `"SIGINT"`).
        force_after: How many signals after the first one end the grace of
            every scope; an int >= 1.

    Returns:
        The installed handlers (a context manager).

    Raises:
        RuntimeError: Not called from the main thread (Python runs signal
            handlers only there), or these handlers are already installed.
        ValueError: An unknown signal name or number, SIGKILL or SIGSTOP (they
            cannot be caught), no signal at all, or `force_after` < 1.
        TypeError: A signal of the wrong type.

    Example:
        ```python
        import quiesce

        with quiesce.handle_signals():           # SIGINT, SIGTERM
            with quiesce.Scope(grace=10) as scope:
                scope.process(serve)
                scope.join()                      # SIGTERM: the ladder runs,
                                                  # then join raises Stopped
        ```
    """
    return SignalHandling(signals, force_after).install()


def _check_signals(signals: Iterable[object]) -> tuple[signal.Signals, ...]:
    if isinstance(signals, str | int):
        signals = (signals,)
    result = []
    for value in signals:
        sig = signal_number("signals", value)
        if sig in _UNCATCHABLE:
            raise ValueError(f"signals: {sig.name} cannot be caught")
        result.append(sig)
    if not result:
        raise ValueError("signals must name at least one signal")
    return tuple(dict.fromkeys(result))
