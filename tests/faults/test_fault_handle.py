"""ProcessHandle on its own: after the exit and the reap, nothing can be signalled.

The PID-reuse tests prove the same through a stranger in a PID namespace;
these check the handle's contract directly, without privileges.
"""

from __future__ import annotations

import multiprocessing
import signal
import time

from faultkit import open_fds

from quiesce._proc import _proctree
from quiesce._proc._guardian_client import Guardian
from quiesce._proc._handle import ProcessHandle


def test_a_command_reaped_behind_the_handles_back_is_never_signalled_again() -> None:
    Guardian.get()  # a per-process helper (its socket stays): started before counting
    fds = open_fds()
    handle, popen = ProcessHandle.start_command("test", ["sh", "-c", "sleep 100 & wait"],
                                                _proctree.new_tag(), {})
    while len(handle.remains()) < 1:  # the background sleep is a proved member
        time.sleep(0.01)
    assert handle.signal(0)  # control: alive, so a signal goes through
    handle.kill_tree()
    popen.wait()  # the user reaps it, not the handle
    assert handle.signal(signal.SIGTERM) is False
    handle.signal_group(signal.SIGTERM)  # no killpg on a number that may be reused
    assert handle.signal_tree(signal.SIGTERM) == 0
    assert handle.reap() == -signal.SIGKILL
    assert handle.remains() == []
    handle.end_remains(kill_after=0.0)
    handle.close()
    handle.close()  # idempotent
    assert handle.signal(signal.SIGKILL) is False
    assert open_fds() - fds == set()  # the pidfd and the members' pidfds are released


def _sleep() -> None:
    time.sleep(100)


def test_a_multiprocessing_child_is_signalled_through_its_pidfd_until_it_exits() -> None:
    process = multiprocessing.get_context("fork").Process(target=_sleep)
    handle = ProcessHandle.start_process(process, _proctree.new_tag())
    assert handle.has_pidfd
    assert not handle.has_exited()
    assert handle.signal(signal.SIGTERM)
    assert handle.wait_exited(10)
    assert handle.reap() == -signal.SIGTERM
    assert handle.signal(signal.SIGKILL) is False  # reaped: the pidfd says ESRCH
    handle.close()
