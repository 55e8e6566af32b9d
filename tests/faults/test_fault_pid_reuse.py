"""Never a stranger: a reaped worker's PID and group number handed to a new process.

Inside a private PID namespace (``unshare --pid --fork --mount-proc``) the
test sets the next PID to a just-reaped worker's and starts a stranger
there, a session leader whose PID, group and session are the worker's old
numbers, with a child in that group. The scope (or pool) then ends through
the whole ladder, SIGKILL step included. On main before ProcessHandle the
stranger and its child were SIGKILLed in all three cases (checked by
running this program with PYTHONPATH pointing at the old sources).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from faultkit import program, unshare_reason

_WHY_NOT = unshare_reason()


@pytest.mark.slow
@pytest.mark.timeout(90)
@pytest.mark.skipif(_WHY_NOT is not None, reason=_WHY_NOT or "")
@pytest.mark.parametrize("kind", ["process", "popen", "pool", "run_command"])
def test_a_stranger_with_the_reaped_workers_pid_is_never_signalled(kind: str,
                                                                   tmp_path: Path) -> None:
    done = subprocess.run(
        ["unshare", "--pid", "--fork", "--mount-proc", sys.executable,
         program("pid_reuse.py"), kind, str(tmp_path)],
        capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["stranger"], "the stranger holding the worker's old PID was signalled"
    assert result["stranger_child"], "the stranger's child (in the reused group) was signalled"
    assert not result["escaper"], "what remained of the worker's tree was not ended"
    assert result["left"] == []
