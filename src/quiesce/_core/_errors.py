"""The exception that means "asked to stop"."""

from __future__ import annotations


class Stopped(BaseException):
    """A worker was asked to stop; a worker that ends with it ended cleanly.

    Derives from BaseException, like KeyboardInterrupt, so a broad
    ``except Exception`` in user code does not swallow a stop request.
    """

    def __init__(self, reason: str | None = None) -> None:
        super().__init__(reason) if reason is not None else super().__init__()
        self.reason = reason


class ProcessDied(RuntimeError):
    """A worker process ended without reporting an outcome (crash, os._exit, OOM kill)."""

    def __init__(self, name: str, exitcode: int | None) -> None:
        how = (
            f"was killed by signal {-exitcode}"
            if exitcode is not None and exitcode < 0
            else f"exited with status {exitcode}"
        )
        super().__init__(f"worker process {name!r} {how} without reporting a result")
        self.name = name
        self.exitcode = exitcode
