"""quiesce.aio.run(amain): asyncio.run plus quiesce.run, bounded at every step.

``amain`` runs as the body of a root ``async with Scope``, with SIGINT and
SIGTERM handled by ``SignalHandling`` (the same handlers as
``quiesce.run``): the first signal stops the root token, which cancels the
body (``Scope.__aenter__``), every scope below runs its ladder, ``finally``
blocks run, and the process then ends *by that signal* (``_die_by``). A
second signal hurries every ladder.

The loop's default executor is a ``quiesce.ThreadPool``, so
``asyncio.to_thread`` and ``run_in_executor(None, ...)`` calls are
stoppable (a cancelled one has its token stopped) and their threads are
daemons.

What asyncio.run does unboundedly, this does within a bound: tasks left
outside any scope are cancelled and awaited for at most ``grace`` (one
that swallows its cancellation is left behind with the closed loop);
async generators get the same bound; the default executor is stopped by
its bounded ``stop()``, not joined (asyncio.run joins it, and a stuck
``to_thread`` call then hangs the program for ever).

Signals while the loop sleeps: Python runs a handler in the main thread
only, between bytecodes; if the kernel gives the signal to another thread
while the main one sleeps in epoll, nothing wakes it. So the C handler's
wake-up fd (``signal.set_wakeup_fd``) is a socket the loop reads: any
signal returns the loop to Python code, which runs the handler. uvloop sets
its own wake-up fd while it runs, to the same effect.

Rejected: ``loop.add_signal_handler`` (asyncio restores SIG_DFL, not the
previous handler, and its handlers would duplicate ``SignalHandling``);
``asyncio.Runner`` (its close waits for every task, unbounded).
"""

from __future__ import annotations

import asyncio
import inspect
import signal
import socket
import sys
import traceback
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn

from quiesce._core import _validate
from quiesce._core._errors import Stopped
from quiesce._pools._threadpool import ThreadPool
from quiesce._scope._entry import _die_by
from quiesce._scope._scope import Scope
from quiesce._scope._signals import SignalHandling


def run(amain: Callable[..., Awaitable[Any]], /, *args: Any, grace: float = 5.0,
        kill_after: float = 2.0) -> NoReturn:
    """Run `await amain(*args)` in a fresh event loop, signals handled, then exit.

    `asyncio.run` plus `quiesce.run`: `amain` is the body of a root
    `async with quiesce.Scope(grace=grace, kill_after=kill_after)`. The
    first SIGINT or SIGTERM stops the root token and cancels `amain`;
    every scope ends by its ladder, `finally` blocks run, and the process
    then dies by that signal (a shell sees 130 / 143). A second signal
    skips what remains of the graces. The loop's default executor is a
    `quiesce.ThreadPool`, so `asyncio.to_thread` work is stoppable. Tasks
    left outside every scope are cancelled at the end and waited for at
    most `grace` seconds, never for ever. The loop is
    `asyncio.new_event_loop()` (so an event loop policy, uvloop's for
    one, applies).

    Exit status: `amain`'s return value if an int, else 0; 1 after an
    uncaught exception (its traceback printed); `SystemExit`'s code; death
    by the signal after a fatal signal.

    Args:
        amain: An async function (any callable returning an awaitable).
        *args: Arguments for `amain`.
        grace: The root scope's grace, in seconds.
        kill_after: The root scope's kill_after, in seconds.

    Raises:
        TypeError: `amain` is not callable.
        ValueError: `grace` or `kill_after` is negative, NaN or infinite.
        RuntimeError: Called off the main thread, or from a running loop.

    Example:
        ```python
        async def main() -> int:
            async with quiesce.Scope(grace=2.0) as scope:
                scope.task(serve())
                scope.process(crunch)
                await quiesce.current_token().wait_async()   # until a signal
            return 0

        if __name__ == "__main__":
            quiesce.aio.run(main)
        ```
    """
    _validate.callable_target("amain", amain)
    grace = _validate.required_seconds("grace", grace)
    kill_after = _validate.required_seconds("kill_after", kill_after)
    if asyncio._get_running_loop() is not None:
        raise RuntimeError("quiesce.aio.run() cannot be called from a running event loop")
    handling = SignalHandling((signal.SIGINT, signal.SIGTERM), 1)
    with handling:
        code = _serve(amain, args, grace, kill_after, handling)
        fatal = handling.first_signal
    if fatal is not None:
        _die_by(fatal)
    sys.exit(code)


def _serve(amain: Callable[..., Awaitable[Any]], args: tuple[Any, ...], grace: float,
           kill_after: float, handling: SignalHandling) -> int | str | None:
    """Run the loop; ``amain``'s exit status."""
    loop = asyncio.new_event_loop()
    wakeup = _SignalWakeup(loop)
    pool = ThreadPool(grace=grace, kill_after=kill_after, thread_name_prefix="asyncio")
    try:
        loop.set_default_executor(pool)
        asyncio.set_event_loop(loop)
        try:
            value = loop.run_until_complete(_main(amain, args, grace, kill_after))
            return value if isinstance(value, int) and not isinstance(value, bool) else 0
        except (Stopped, asyncio.CancelledError):
            return 0
        except SystemExit as exc:
            return exc.code
        except BaseException as exc:
            traceback.print_exception(exc)
            return 1
    finally:
        try:
            hurried = len(handling.received) > 1  # a second signal: no more waiting
            _finish(loop, pool, 0.0 if hurried else grace)
        finally:
            wakeup.close()
            asyncio.set_event_loop(None)
            loop.close()


async def _main(amain: Callable[..., Awaitable[Any]], args: tuple[Any, ...], grace: float,
                kill_after: float) -> Any:
    name = getattr(amain, "__name__", "main")
    async with Scope(grace=grace, kill_after=kill_after, name=name):
        awaitable = amain(*args)
        if not inspect.isawaitable(awaitable):
            raise TypeError(f"amain must be an async function; {name}() returned "
                            f"{type(awaitable).__name__}, not an awaitable")
        return await awaitable


def _finish(loop: asyncio.AbstractEventLoop, pool: ThreadPool, bound: float) -> None:
    """What asyncio.run does after main, each step bounded by ``bound`` seconds."""
    left = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for task in left:
        task.cancel()
    if left:
        loop.run_until_complete(asyncio.wait(left, timeout=bound))
    for task in left:
        if task.done() and not task.cancelled() and task.exception() is not None:
            loop.call_exception_handler({"message": "unhandled exception during quiesce.aio.run "
                                         "shutdown", "exception": task.exception(), "task": task})
    gens = loop.create_task(loop.shutdown_asyncgens())
    loop.run_until_complete(asyncio.wait([gens], timeout=bound))
    pool.stop(bound)  # bounded; a user's own default executor is shut down by loop.close()


class _SignalWakeup:
    """Make every signal wake the loop, so its Python handler runs at once."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._reader, self._writer = socket.socketpair()
        for sock in (self._reader, self._writer):
            sock.setblocking(False)
        self._previous = signal.set_wakeup_fd(self._writer.fileno(), warn_on_full_buffer=False)
        loop.add_reader(self._reader.fileno(), self._drain)

    def _drain(self) -> None:
        try:
            while self._reader.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass  # returning to Python code is what runs the handler

    def close(self) -> None:
        signal.set_wakeup_fd(self._previous)
        try:
            self._loop.remove_reader(self._reader.fileno())
        except (RuntimeError, ValueError):
            pass
        self._reader.close()
        self._writer.close()
