"""``interrupt_threads=True`` under ``sys.settrace`` must not lock the interpreter up.

On Python 3.11, clearing a pending asynchronous exception with
``PyThreadState_SetAsyncExc(ident, NULL)`` left the eval breaker set for
good; with a tracer installed every thread then spun at function entry,
and the program below never printed "done" (checked on the sources
before the fix: killed by the timeout).
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from faultkit import program


@pytest.mark.slow
def test_interrupting_threads_under_a_tracer_does_not_lock_up() -> None:
    done = subprocess.run([sys.executable, program("interrupt_traced.py")],
                          capture_output=True, text=True, timeout=45)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "terminated stopped finished"
    assert lines[-1] == "done"
