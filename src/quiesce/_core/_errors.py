"""The exception that means "asked to stop"."""

from __future__ import annotations


class Stopped(BaseException):
    """A worker was asked to stop; a worker that ends with it ended cleanly.

    Raised by `StopToken.raise_if_stopped`, by `quiesce.sleep` when the
    current token stops, in a quiesce child process's main thread when its
    scope's ladder sends SIGTERM, in a thread of a `Scope` made with
    `interrupt_threads=True`, and in `main` under `quiesce.run` on the first
    SIGINT/SIGTERM. A worker (thread, process, pool task) that ends with it is
    reported `stopped` (or `terminated`), never `failed`, and a scope does not
    raise it again as an error.

    It derives from `BaseException`, like `KeyboardInterrupt`, so a broad
    `except Exception:` in user code does not swallow a stop request. Catch it
    by name if you must, and re-raise it.

    Attributes:
        reason: The reason given to `StopToken.stop`, or None.

    Example:
        ```python
        def worker():
            try:
                while True:
                    quiesce.sleep(1.0)          # raises Stopped once stopped
                    do_a_unit_of_work()
            except quiesce.Stopped as stop:
                log.info("stopping: %s", stop.reason)
                raise                            # the worker ends "stopped"
        ```
    """

    def __init__(self, reason: str | None = None) -> None:
        super().__init__(reason) if reason is not None else super().__init__()
        self.reason = reason


class ProcessDied(RuntimeError):
    """A worker process ended without reporting an outcome (crash, os._exit, OOM kill).

    A `ProcessPool` task's future fails with it when the worker process running
    the task dies (the pool replaces the worker and keeps serving); a
    `scope.process` worker that dies that way fails with it, which stops its
    scope like any worker error.

    Attributes:
        name: The worker's name.
        exitcode: The exit status, negative for a signal (-9 for SIGKILL), or
            None if unknown.

    Example:
        ```python
        with quiesce.ProcessPool(2) as pool:
            future = pool.submit(os._exit, 3)
            try:
                future.result()
            except quiesce.ProcessDied as died:
                print(died.exitcode)            # 3
        ```
    """

    def __init__(self, name: str, exitcode: int | None) -> None:
        how = (
            f"was killed by signal {-exitcode}"
            if exitcode is not None and exitcode < 0
            else f"exited with status {exitcode}"
        )
        super().__init__(f"worker process {name!r} {how} without reporting a result")
        self.name = name
        self.exitcode = exitcode
