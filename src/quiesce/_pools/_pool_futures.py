"""Futures whose *running* task can be cancelled, and timed out.

``concurrent.futures.Future.cancel()`` refuses a running task. A pool
task's future instead ends CANCELLED at once and asks the pool to stop the
task (its token, then the pool's ladder); a timeout ends it with
``TimeoutError`` the same way. The task may still be running for a
moment: when it returns, its result is dropped (``resolve`` ignores a
future that is already done).

``result()`` and ``exception()`` wait in slices in the main thread (see
_main_wait): a SIGTERM handled by ``handle_signals`` must run while the
main thread waits on a future, or the stop it starts never comes.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from concurrent.futures._base import CANCELLED, CANCELLED_AND_NOTIFIED, FINISHED, RUNNING
from typing import Any, TypeVar

from quiesce._core._errors import Stopped
from quiesce._core._main_wait import in_slices

T = TypeVar("T")


class TaskFuture(Future[T]):
    """A Future whose ``cancel()`` also stops a running task."""

    _stop_running: Callable[[TaskFuture[Any], str], None] | None = None

    def result(self, timeout: float | None = None) -> T:
        if self._state not in _DONE:  # in slices: signals in main, no overflow off main
            in_slices(self._wait_done, timeout)
            timeout = 0
        return super().result(timeout)

    def exception(self, timeout: float | None = None) -> BaseException | None:
        if self._state not in _DONE:  # in slices: signals in main, no overflow off main
            in_slices(self._wait_done, timeout)
            timeout = 0
        return super().exception(timeout)

    def _wait_done(self, timeout: float | None) -> bool:
        with self._condition:
            if self._state not in _DONE:
                self._condition.wait(timeout)
            return self._state in _DONE

    def cancel(self) -> bool:
        with self._condition:
            if self._state != RUNNING:
                return super().cancel()
            self._state = CANCELLED_AND_NOTIFIED
            for waiter in self._waiters:
                waiter.add_cancelled(self)
            self._condition.notify_all()
            stop = self._stop_running
        self._invoke_callbacks()  # type: ignore[attr-defined]
        if stop is not None:
            stop(self, "cancelled")
        return True

    def time_out(self, seconds: float) -> bool:
        """End a running task's future with TimeoutError; False if it already ended."""
        with self._condition:
            if self._state != RUNNING:
                return False
            stop = self._stop_running
        if not resolve(self, exception=TimeoutError(f"task timed out after {seconds:g} s")):
            return False
        if stop is not None:
            stop(self, "timed out")
        return True

    def deadline_passed(self) -> bool:
        """The deadline block the task was submitted in ended: ``Stopped``, then the ladder.

        ``Stopped``, not ``TimeoutError``: waiting on the future inside that
        block then ends the block as its own deadline would (swallowed by
        ``move_on_*``, ``TimeoutError`` from ``fail_*``).
        """
        with self._condition:
            if self._state != RUNNING:
                return False
            stop = self._stop_running
        if not resolve(self, exception=Stopped("deadline passed")):
            return False
        if stop is not None:
            stop(self, "deadline passed")
        return True


_DONE = frozenset({CANCELLED, CANCELLED_AND_NOTIFIED, FINISHED})


def resolve(future: Future[Any], result: Any = None,
            exception: BaseException | None = None) -> bool:
    """Set the outcome unless the future already ended (cancelled or timed out)."""
    try:
        if exception is not None:
            future.set_exception(exception)
        else:
            future.set_result(result)
    except InvalidStateError:
        return False
    return True
