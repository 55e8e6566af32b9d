"""TaskWorker: an asyncio task owned by a Scope (``scope.task(coro)``).

To the scope a task is one more worker, so the same ladder, report and
error rules apply; what each rung means differs:

1. the token stops: the task is cancelled. The cancel is handed to the
   task's loop (``call_soon_threadsafe``) from whatever thread stopped the
   token — at once, in that thread, not after the ladder thread starts, so
   a scope of tasks ends as fast as an ``asyncio.TaskGroup``;
2. after ``grace``, a task still running has swallowed its cancellation:
   it is cancelled once more and *abandoned* (reported, no longer waited
   for), so it never holds its scope beyond the grace;
3. there is nothing to kill: ``kill_after`` does not apply to tasks.

The task runs in a copy of the creator's context in which
``current_token()`` is its own token (a child of the scope's), so scopes,
threads and processes it starts nest below it.

Rejected: waiting for the ladder thread to send the first cancel (one
thread hand-off more per scope exit); ``task.cancel()`` from a foreign
thread (asyncio is not thread-safe); cancelling an abandoned task again
and again (a task that swallows one cancel swallows the next).
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time
import weakref
from collections.abc import Coroutine
from typing import Any

from quiesce._core._context import _current
from quiesce._core._ended_by import EndedBy
from quiesce._core._errors import Stopped
from quiesce._scope._worker import Owner, Worker


class TaskWorker(Worker):
    kind = "task"

    def __init__(self, owner: Owner, name: str, coro: Coroutine[Any, Any, Any],
                 loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(owner, name, owner.token.child())
        self._loop = loop
        self._coro: Coroutine[Any, Any, Any] | None = coro
        self.task: asyncio.Task[Any] | None = None
        self._cancels = 0  # cancels requested: the first on stop, one more at grace
        self._cancel_lock = threading.Lock()

    @property
    def alive(self) -> bool:
        """Running and not abandoned: an abandoned task holds up neither join nor exit."""
        return not self._done.is_set() and self._ended_by != "abandoned"

    def _start(self) -> None:
        coro, self._coro = self._coro, None
        assert coro is not None
        context = contextvars.copy_context()
        context.run(_current.set, self._token)
        self.task = self._loop.create_task(coro, name=self._name, context=context)
        self.task.add_done_callback(self._on_done)
        ref = weakref.ref(self)  # the token must not keep its worker alive
        self._token.on_stop(lambda: _call_weak(ref))

    def _close_unstarted(self) -> None:
        """The scope refused to start us: close the coroutine (no "never awaited" warning)."""
        if self._coro is not None:
            self._coro.close()
            self._coro = None

    # -- the ladder ------------------------------------------------------------------
    def _on_stop_requested(self) -> None:
        self._request_cancel(1)

    def _terminate(self) -> None:
        """After grace the task still runs: it swallowed the cancel. Abandon it."""
        if self._done.is_set():
            return
        self._request_cancel(2)
        self._abandon()

    def _abandon(self) -> None:
        if self._done.is_set() or self._ended_by == "abandoned":
            return
        self._ended_at = self._ended_at or time.monotonic()
        self._ended_by = "abandoned"
        self._owner.worker_changed()

    def _wait_ended(self, timeout: float | None) -> bool:
        return not self.alive  # nothing to reap: never wait

    def _request_cancel(self, nth: int) -> None:
        """Send the ``nth`` cancel once, to the task's loop, from any thread."""
        with self._cancel_lock:
            if self._cancels >= nth:
                return
            self._cancels = nth
        try:
            self._loop.call_soon_threadsafe(self._cancel)
        except RuntimeError:
            pass  # the loop is closed: the task will never run again

    def _cancel(self) -> None:
        task = self.task
        if task is not None and not task.done():
            task.cancel(msg=self._token.reason)

    # -- the ending ------------------------------------------------------------------
    def _on_done(self, task: asyncio.Task[Any]) -> None:
        outcome: tuple[EndedBy, Any, BaseException | None]
        if task.cancelled():
            outcome = ("stopped", None, None)
        else:
            exc = task.exception()
            if exc is None:
                outcome = ("stopped" if self._token.stopped else "finished", task.result(), None)
            elif isinstance(exc, Stopped):
                outcome = ("stopped", None, None)
            else:
                outcome = ("failed", None, exc)
        self._finish(*outcome)


def _call_weak(ref: weakref.ref[TaskWorker]) -> None:
    worker = ref()
    if worker is not None:
        worker._request_cancel(1)
