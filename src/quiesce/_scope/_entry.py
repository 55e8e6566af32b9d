"""quiesce.run(main): the one-line entry point with conventional exit statuses.

``main`` runs in the main thread inside a root scope, with SIGINT and
SIGTERM handled: the first one stops the root token (every scope runs its
ladder) and raises ``Stopped`` in ``main`` itself, as Ctrl-C raises
KeyboardInterrupt, so a ``main`` blocked in a plain call still unwinds
through its ``finally`` blocks. A second signal skips the remaining grace.

After a fatal signal the process ends *by that signal*, once cleanup ran
(scopes, ``atexit``, flushed stdio): a parent shell or a cluster manager
sees a real signal death (-15 in Python, 143 in a shell), the way CPython
itself re-raises SIGINT after KeyboardInterrupt. Exiting with 143 instead
would lie to ``waitpid``.
"""

from __future__ import annotations

import atexit
import os
import signal
import sys
import traceback
from collections.abc import Callable
from typing import Any, NoReturn

from quiesce._core import _validate
from quiesce._core._errors import Stopped
from quiesce._scope._scope import Scope
from quiesce._scope._signals import SignalHandling


def run(main: Callable[..., Any], /, *args: Any, grace: float = 5.0,
        kill_after: float = 2.0) -> NoReturn:
    """Run `main(*args)` with signals handled in a root scope, then exit the process.

    The one-line entry point of a program. `main` runs in the main thread,
    inside a `Scope` and under `handle_signals()` (SIGINT, SIGTERM). The
    first signal stops the root token, so every scope ends by its ladder,
    and raises `Stopped` in `main` itself (as Ctrl-C raises
    `KeyboardInterrupt`), so `finally` blocks run; a second signal skips the
    remaining grace.

    The process then exits with the conventional status: `main`'s return
    value if it is an int, else 0; a `SystemExit`'s code; 1 after an
    uncaught exception (its traceback printed). After a signal, once
    cleanup and `atexit` have run and stdio is flushed, the process ends
    *by that signal*, so its parent sees a signal death (-15 from
    `subprocess`, 143 in a shell).

    Args:
        main: The program's main function.
        *args: Positional arguments for `main`.
        grace: The root scope's grace, seconds; finite, >= 0.
        kill_after: The root scope's kill_after, seconds; finite, >= 0.

    Raises:
        TypeError: `main` is not callable, or a duration is not a number.
        ValueError: `grace` or `kill_after` is negative, NaN or infinite.
        RuntimeError: Not called from the main thread.

    Example:
        ```python
        import quiesce

        def main() -> int:
            with quiesce.Scope(grace=10, kill_after=5) as scope:
                scope.process(crunch)
                scope.join()
            return 0

        if __name__ == "__main__":
            quiesce.run(main)                 # never returns
        ```
    """
    _validate.callable_target("main", main)
    _validate.required_seconds("grace", grace)
    _validate.required_seconds("kill_after", kill_after)
    in_main = [False]
    handling = SignalHandling((signal.SIGINT, signal.SIGTERM), 1,
                              interrupt_main=lambda: in_main[0])
    with handling:
        code = _run_main(main, args, grace, kill_after, in_main)
        fatal = handling.first_signal
    if fatal is not None:
        _die_by(fatal)
    sys.exit(code)


def _run_main(main: Callable[..., Any], args: tuple[Any, ...], grace: float,
              kill_after: float, in_main: list[bool]) -> int | str | None:
    """main's exit status: its int return, 0, 1 on an uncaught exception, SystemExit's code."""
    name = getattr(main, "__name__", "main")
    try:
        with Scope(grace=grace, kill_after=kill_after, name=name):
            in_main[0] = True
            try:
                value = main(*args)
            finally:
                in_main[0] = False
        return value if isinstance(value, int) and not isinstance(value, bool) else 0
    except Stopped:
        return 0
    except SystemExit as exc:
        return exc.code
    except BaseException as exc:
        traceback.print_exception(exc)
        return 1


def _die_by(sig: signal.Signals) -> NoReturn:
    """Run atexit callbacks, flush, then end this process by ``sig``."""
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):
            pass
    signal.signal(sig, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {sig})
    os.kill(os.getpid(), sig)
    os._exit(128 + sig)  # only if the signal did not end us (it is blocked elsewhere)
