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
    """Run ``main(*args)`` with signals handled in a root scope, then exit the process."""
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
