"""Deterministic release: a scope's fds and threads go when it ends, gc or no gc.

30 scopes of (2 processes, 4 threads, 1 popen) with the garbage collector
disabled: once the first scope has set up quiesce's per-process helpers
(launcher, guardian, token arena, watcher), the fd table and the thread
list are back to the same size after every scope. Before the Owner
protocol and ProcessHandle this left 240 eventfds open with gc off.
"""

from __future__ import annotations

import gc
import os
import threading

import pytest
from faultkit import open_fds

import quiesce


def _wait(token: quiesce.StopToken) -> None:
    token.wait()


def _one_scope() -> None:
    with quiesce.Scope(grace=5, kill_after=2) as scope:
        for _ in range(2):
            scope.process(_wait)
        for _ in range(4):
            scope.thread(_wait)
        scope.popen(["sleep", "30"])


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_thirty_scopes_leave_no_fd_and_no_thread_with_gc_disabled() -> None:
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        _one_scope()  # per-process helpers start here, once
        fds, threads = open_fds(), set(threading.enumerate())
        for _ in range(30):
            _one_scope()
        leaked_fds = open_fds() - fds
        leaked_threads = set(threading.enumerate()) - threads
    finally:
        if was_enabled:
            gc.enable()
    assert leaked_fds == set(), {fd: _describe(fd) for fd in leaked_fds}
    assert leaked_threads == set()


def test_the_fd_count_can_see_a_leak() -> None:
    """Control: a token kept alive holds its eventfd, and the count shows it."""
    fds = open_fds()
    token = quiesce.StopToken()
    token.fileno()
    assert open_fds() - fds
    del token


def _describe(fd: int) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return "?"
