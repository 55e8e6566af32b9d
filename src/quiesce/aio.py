"""quiesce for asyncio: the same stop guarantees for coroutines, beside threads and processes.

- `quiesce.aio.run(amain, *args, grace=, kill_after=)`: `asyncio.run` plus
  `quiesce.run` (signals stop the root token and cancel `amain`; the
  process ends by the signal after cleanup).
- `await quiesce.aio.to_thread(fn, *args)` / `to_process(fn, *args)`: a
  blocking call that a cancellation stops by the ladder.
- `async with quiesce.aio.cancel_on_stop(token):` a token's stop cancels
  the block, which raises `Stopped`.

Also for asyncio, elsewhere: `async with quiesce.Scope(...)` with
`scope.task(coro)`, `await token.wait_async(timeout)`, `async with
quiesce.move_on_after(...)`, and `quiesce.ThreadPool` as a loop's default
executor.

Example:
    ```python
    import asyncio, quiesce, quiesce.aio

    async def main() -> None:
        async with quiesce.Scope(grace=2.0) as scope:
            scope.task(ticker())                  # cancelled when the block ends
            scope.process(crunch)                 # the ladder: token, SIGTERM, SIGKILL
            await quiesce.aio.to_thread(load, "data.csv")
            await quiesce.current_token().wait_async()   # until SIGTERM / Ctrl-C

    quiesce.aio.run(main)
    ```
"""

from quiesce._aio._cancel import CancelOnStop, cancel_on_stop
from quiesce._aio._offload import to_process, to_thread
from quiesce._aio._run import run

__all__ = ["CancelOnStop", "cancel_on_stop", "run", "to_process", "to_thread"]
