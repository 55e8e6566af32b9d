"""PoolWorker: a ThreadPool or ProcessPool owned by a Scope.

To its scope a pool is a worker that is *alive while it has work* (queued
or running tasks), so ``scope.join()`` returns once every submitted task
is done, as with threads and processes. When the scope stops, the pool is
stopped by its own bounded ``stop(grace)`` (same grace and kill_after as
the scope), in the background, so the scope's ladder runs on its other
workers in parallel. Task errors stay in their futures: a pool task that
fails is the caller's to look at, as with the stdlib's executors.
"""

from __future__ import annotations

import signal
import threading

from quiesce._pools._pool_base import Pool
from quiesce._scope._worker import Owner, Worker


class PoolWorker(Worker):
    kind = "pool"

    def __init__(self, owner: Owner, name: str, pool: Pool) -> None:
        super().__init__(owner, name, owner.token.child())
        self.pool = pool
        self._stopping = False
        pool._idle_hooks.append(self._notify_scope)
        pool._unlink_above()  # the scope's ladder stops it, with its own report

    @property
    def alive(self) -> bool:
        """Busy, or being stopped: an idle pool does not hold up ``scope.join()``."""
        return not self._done.is_set() and (self._stopping or self.pool.busy())

    def _start(self) -> None:
        """Nothing to start: the pool starts its workers on the first task."""

    def _notify_scope(self) -> None:
        self._owner.worker_changed()

    def _on_stop_requested(self) -> None:
        if self.pool._shutdown and not self.pool.busy():
            self._finish("finished")
            self.pool.shutdown(wait=False)
            return
        self._stopping = True
        threading.Thread(target=self._stop_pool, args=(self.pool.busy(),),
                         name=f"quiesce-stop-{self._name}", daemon=True).start()

    def _terminate(self) -> None:
        self.pool._hurry(signal.SIGTERM)  # on time, or early after a second signal

    def _kill(self) -> None:
        self.pool._hurry(signal.SIGKILL)

    def _stop_pool(self, busy: bool) -> None:
        """The pool's own bounded stop; the report says the hardest step a task needed."""
        self.pool.stop(self._owner.grace)
        self._finish(self.pool._ended_by if busy else "finished")
        self._notify_scope()
