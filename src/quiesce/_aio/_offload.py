"""to_thread() / to_process(): one blocking call, awaited, and stopped by the ladder.

Each call is a private ``async with Scope`` holding one worker, so it gets
the scope's whole machinery and report: the worker's token is a child of
the caller's ``current_token()``; cancelling the awaiting task stops that
token, then runs the ladder while the caller waits (off the loop); the
call's own failure is raised as itself.

A thread cannot be killed, so ``to_thread`` abandons it after ``grace``
(a daemon thread: it never holds the interpreter at exit); ``kill_after``
is accepted for symmetry and does not lengthen that. A process gets
SIGTERM after ``grace`` (``Stopped`` in its main thread, so ``finally``
runs) and SIGKILL to its whole tree after ``kill_after``.

Rejected: ``loop.run_in_executor`` on a shared pool (a cancelled call
would go on running unseen, and its caller could not wait for its end);
asyncio's own ``to_thread`` (same, and its thread is not a daemon).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from quiesce._core import _validate
from quiesce._scope._scope import Scope

T = TypeVar("T")


async def to_thread(fn: Callable[..., T], /, *args: Any, grace: float = 5.0,
                    kill_after: float = 2.0, **kwargs: Any) -> T:
    """Run `fn(*args, **kwargs)` in a daemon thread and await its result.

    Inside, `quiesce.current_token()` is the call's own token, a child of the
    caller's (also passed as `token=` if `fn` declares that parameter).
    Cancelling the awaiting task stops that token; the cancellation is
    raised once the thread has returned, or after `grace` seconds, when the
    thread is abandoned (a daemon: it never holds the interpreter's exit).

    Args:
        fn: The blocking callable.
        *args: Positional arguments for `fn`.
        grace: Seconds a stopped thread gets before it is abandoned.
        kill_after: Accepted for symmetry with `to_process`; a thread
            cannot be killed, so it does not lengthen the wait.
        **kwargs: Keyword arguments for `fn` (`grace` and `kill_after` are
            this function's own).

    Returns:
        What `fn` returned.

    Raises:
        TypeError: `fn` is not callable.
        ValueError: `grace` or `kill_after` is negative, NaN or infinite.
        quiesce.Stopped: A stop from above (an outer scope, a signal) ended it.

    Example:
        ```python
        rows = await quiesce.aio.to_thread(read_big_file, path, grace=1.0)
        ```
    """
    _validate.callable_target("fn", fn)
    _validate.required_seconds("kill_after", kill_after)
    async with Scope(grace=grace, kill_after=0.0, name="to_thread") as scope:
        worker = scope.thread(fn, *args, **kwargs)
        await scope._until_ended(worker)
    result: T = worker.result
    return result


async def to_process(fn: Callable[..., T], /, *args: Any, grace: float = 5.0,
                     kill_after: float = 2.0, **kwargs: Any) -> T:
    """Run `fn(*args, **kwargs)` in a child process and await its result.

    The target and arguments are pickled up front; the child is a quiesce
    worker (its own process group, killed with its whole tree if this
    process dies). Cancelling the awaiting task stops its token, SIGTERMs it
    after `grace` (`Stopped` in its main thread, so `finally` runs) and
    SIGKILLs its whole tree after `kill_after`; the cancellation is raised
    once it is gone.

    Args:
        fn: A picklable callable.
        *args: Positional arguments for `fn`.
        grace: Seconds between the token's stop and SIGTERM.
        kill_after: Seconds between SIGTERM and SIGKILL.
        **kwargs: Keyword arguments for `fn`.

    Returns:
        What `fn` returned (it must be picklable).

    Raises:
        TypeError: `fn` is not callable, or it or its arguments cannot be
            pickled (the message names `fn`).
        ValueError: `grace` or `kill_after` is negative, NaN or infinite.
        quiesce.ProcessDied: The child died without reporting.

    Example:
        ```python
        digest = await quiesce.aio.to_process(hash_file, path, grace=2.0)
        ```
    """
    _validate.callable_target("fn", fn)
    async with Scope(grace=grace, kill_after=kill_after, name="to_process") as scope:
        worker = scope.process(fn, *args, **kwargs)
        await scope._until_ended(worker)
    result: T = worker.result
    return result
