"""The rest of the ladder for what remains of a worker's tree after its root ended.

A worker process or a command can exit and leave descendants behind
(``cmd &``, a daemon that double-forked). They are found by the worker's
tag and process group (see _proctree): SIGTERM, then SIGKILL after
``kill_after`` or as soon as the scope's ladder reaches its kill step.

The group number is the reaped leader's PID. The kernel does not hand
that number to a new process while any member of the group lives, so
members found by it are ours; once the group is empty a stranger could
get the number, which is why the loop stops the moment nothing is left.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable

from quiesce._proc import _proctree

POLL = 0.02
KILL_TIMEOUT = 5.0


def end_remains(*, tag: str, pgid: int | None, kill_after: float,
                kill_now: Callable[[], bool]) -> None:
    """SIGTERM what remains, SIGKILL it after ``kill_after`` (or once ``kill_now()``)."""
    if not _proctree.snapshot(tag=tag, pgid=pgid, include_root=False):
        return
    if not kill_now():
        _proctree.signal_tree(signal.SIGTERM, tag=tag, pgid=pgid, include_root=False)
        deadline = time.monotonic() + kill_after
        while time.monotonic() < deadline and not kill_now():
            if not _proctree.snapshot(tag=tag, pgid=pgid, include_root=False):
                return
            time.sleep(POLL)
    _proctree.kill_tree(tag=tag, pgid=pgid, include_root=False, timeout=KILL_TIMEOUT)
