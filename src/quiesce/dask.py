"""quiesce on a Dask cluster: stoppable tasks, a stoppable Executor, a cluster-wide token.

Needs the ``dask`` extra (``pip install 'quiesce[dask]'``, which brings
``distributed``). Three names:

- ``Ladder(grace, kill_after)``: a worker plugin; inside a task
  ``quiesce.current_token()`` is the task's token, and cancelling a running
  task stops it by the ladder (token, then ``Stopped`` in its thread, then
  a worker restart through its nanny).
- ``Executor(client, *, task_timeout=None, grace=, kill_after=)``: a
  ``concurrent.futures.Executor`` over the cluster with the pools' semantics.
- ``DistributedToken(name=None, client=None)``: a stop token seen by every
  task on every worker.

See docs/dask.md ("Running on a Dask cluster").
"""

from __future__ import annotations

try:
    import distributed as _distributed  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised in a subprocess by the tests
    raise ImportError(
        "quiesce.dask needs dask.distributed, which is not installed: "
        "pip install 'quiesce[dask]'"
    ) from exc

from quiesce._dask._distributed_token import DistributedToken
from quiesce._dask._executor import Executor
from quiesce._dask._ladder_plugin import Ladder

__all__ = ["DistributedToken", "Executor", "Ladder"]
