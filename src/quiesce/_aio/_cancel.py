"""cancel_on_stop(): a token's stop cancels a block of async code, which raises Stopped.

The bridge between the two ways of asking code to stop: quiesce's tokens
(threads, processes, signals) and asyncio's cancellation. The block's task
is cancelled on the loop (the stop may come from any thread or process:
see ``TaskCanceller``), and at the block's end a cancellation that came
from the token, and from nothing else, becomes ``Stopped``, so callers see
*why* the code stopped. A cancel that also came from elsewhere (a timeout,
a TaskGroup) stays a ``CancelledError``: asyncio's bookkeeping
(``Task.uncancel``) tells the two apart, as ``asyncio.timeout`` does.

Rejected: a helper task awaiting ``token.wait_async()`` per block (a task
per block, and it must itself be cancelled and awaited on every exit).
"""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import final

from quiesce._core._async_wait import TaskCanceller
from quiesce._core._context import current_token
from quiesce._core._errors import Stopped
from quiesce._core._token import StopToken


@final
class CancelOnStop:
    """The async context manager returned by `quiesce.aio.cancel_on_stop()`.

    `async with` gives the token it watches; see `cancel_on_stop` for the
    rules. One use only: enter a new one for each block.

    Example:
        ```python
        guard = quiesce.aio.cancel_on_stop(token)   # a CancelOnStop
        async with guard as watched:
            await watched.wait_async()               # or any other await
        ```
    """

    __slots__ = ("_canceller", "_task", "_token")

    def __init__(self, token: StopToken | None) -> None:
        if token is not None and not isinstance(token, StopToken):
            raise TypeError(f"token must be a StopToken or None, not {type(token).__name__}")
        self._token = token
        self._canceller: TaskCanceller | None = None
        self._task: asyncio.Task[object] | None = None

    async def __aenter__(self) -> StopToken:
        if self._canceller is not None:
            raise RuntimeError("this cancel_on_stop() block is already entered; make a new one")
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("cancel_on_stop() must be used inside an asyncio task")
        token = self._token if self._token is not None else current_token()
        self._token, self._task = token, task
        self._canceller = TaskCanceller(token, task, asyncio.get_running_loop())
        return token

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        canceller, self._canceller = self._canceller, None
        assert canceller is not None and self._task is not None and self._token is not None
        if canceller.disarm() and self._task.uncancel() == 0 \
                and isinstance(exc, asyncio.CancelledError):
            raise Stopped(self._token.reason) from None


def cancel_on_stop(token: StopToken | None = None) -> CancelOnStop:
    """Cancel the enclosed async code when `token` stops; it then raises `Stopped`.

    The stop may come from any thread or process. If the block ends before
    the cancellation lands, it ends normally. A cancellation that also came
    from elsewhere (`asyncio.timeout`, a TaskGroup) stays a
    `CancelledError`, so those keep working around and inside the block.

    Args:
        token: The token to watch; None (the default): `quiesce.current_token()`
            where the block is entered (its scope, worker or task; else the
            root token, which signals stop under `quiesce.aio.run`).

    Returns:
        An async context manager; `async with` gives the token it watches.

    Raises:
        TypeError: `token` is not a StopToken.
        RuntimeError: Entered outside an asyncio task.
        quiesce.Stopped: Out of the block, when the token's stop cancelled it.

    Example:
        ```python
        async def serve(token: quiesce.StopToken) -> None:
            async with quiesce.aio.cancel_on_stop(token):
                await server.serve_forever()   # Stopped once the token stops
        ```
    """
    return CancelOnStop(token)
