"""A token's eventfd is written only once something can wait on it (see _token_core).

Until a token is *exposed* (``fileno()``, pickled, alive across a fork) its
waiters sleep on an in-process latch and a stop makes no system call. These
tests hold every way a waiter can be on one side of that line when the stop
comes from the other: each would hang (and fail its timeout) if a path
forgot to wake it.
"""

from __future__ import annotations

import multiprocessing
import os
import select
import threading

import pytest

import quiesce

from procs import wait_for
from targets import report_fd_readable, stop_token

START_METHODS = multiprocessing.get_all_start_methods()


def _readable(fd: int) -> bool:
    return bool(select.select([fd], [], [], 0)[0])


def _waiting_thread(token: quiesce.StopToken) -> tuple[threading.Thread, list[bool]]:
    """A thread in ``token.wait(30)``, returned once its lock is on the core's latch."""
    woke: list[bool] = []
    thread = threading.Thread(target=lambda: woke.append(token.wait(30)), daemon=True)
    thread.start()

    def sleeping() -> bool:
        latch = token._core._latch  # type: ignore[union-attr]
        return latch is not None and bool(latch._waiters)

    wait_for(sleeping, "the waiter to reach the latch", timeout=10)
    return thread, woke


def test_a_stop_of_a_token_nobody_else_can_see_writes_no_fd() -> None:
    hidden = quiesce.StopToken()
    thread, woke = _waiting_thread(hidden)
    hidden.stop("local")
    thread.join(10)
    assert woke == [True]
    assert not _readable(hidden._core.read_fd)  # type: ignore[union-attr]
    # Negative control: once exposed, a stop writes it.
    exposed = quiesce.StopToken()
    exposed.fileno()
    exposed.stop("local")
    assert _readable(exposed._core.read_fd)  # type: ignore[union-attr]


def test_fileno_of_a_token_stopped_while_hidden_is_readable() -> None:
    token = quiesce.StopToken()
    token.stop("before anyone asked for the fd")
    assert _readable(token.fileno())


@pytest.mark.parametrize("method", START_METHODS)
def test_a_token_stopped_while_hidden_then_sent_wakes_an_fd_waiter_there(method: str) -> None:
    ctx = multiprocessing.get_context(method)
    token = quiesce.StopToken()
    token.stop("before it was sent")
    queue = ctx.Queue()
    proc = ctx.Process(target=report_fd_readable, args=(token, queue))
    proc.start()
    try:
        assert queue.get(timeout=30) is True
    finally:
        proc.join(30)
    assert proc.exitcode == 0


@pytest.mark.parametrize("method", START_METHODS)
def test_a_thread_waiting_before_the_token_was_sent_wakes_on_the_childs_stop(
        method: str) -> None:
    ctx = multiprocessing.get_context(method)
    token = quiesce.StopToken()
    thread, woke = _waiting_thread(token)  # on the latch: the token was hidden then
    proc = ctx.Process(target=stop_token, args=(token, f"child {method}"))
    proc.start()
    proc.join(30)
    assert proc.exitcode == 0
    thread.join(10)
    assert woke == [True] and token.reason == f"child {method}"


def test_a_thread_waiting_across_a_fork_wakes_on_the_forked_childs_stop() -> None:
    token = quiesce.StopToken()
    thread, woke = _waiting_thread(token)
    pid = os.fork()
    if pid == 0:  # the child: stop the inherited token, nothing else
        try:
            token.stop("forked child")
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    thread.join(10)
    assert woke == [True] and token.reason == "forked child"


def test_a_forked_child_waiting_on_an_inherited_token_wakes_on_the_parents_stop() -> None:
    token = quiesce.StopToken()  # hidden until the fork exposes it
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            os.write(w, b"waiting\n")
            os.write(w, b"woke\n" if token.wait(20) else b"timeout\n")
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r) as lines:
        assert lines.readline() == "waiting\n"
        token.stop("parent")
        assert lines.readline() == "woke\n"
    os.waitpid(pid, 0)


def test_a_fork_exposes_every_token_before_either_side_runs_on() -> None:
    """The parent's stop right after the fork writes the fd the child waits on.

    No blocking call between ``fork()`` and ``stop()``: this process's
    watcher cannot have looked at the token yet, so only the fork itself can
    have exposed it.
    """
    token = quiesce.StopToken()
    pid = os.fork()
    if pid == 0:
        os._exit(0 if select.select([token.fileno()], [], [], 20)[0] else 1)
    token.stop("parent")
    assert _readable(token._core.read_fd)  # type: ignore[union-attr]
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_the_fork_hooks_see_every_token_while_another_thread_makes_tokens() -> None:
    """The hooks copy the set of live tokens while another thread adds to it: the copy
    must not fail ("Set changed size during iteration"; a hook's error is only
    printed, and the tokens after it went unexposed and unwatched)."""
    import sys

    keep = [quiesce.StopToken() for _ in range(3000)]  # a copy long enough to be cut
    errors: list[BaseException | None] = []
    old_hook, old_interval = sys.unraisablehook, sys.getswitchinterval()
    sys.unraisablehook = lambda unraisable: errors.append(unraisable.exc_value)
    done = threading.Event()

    def churn() -> None:
        while not done.is_set():
            quiesce.StopToken()

    churner = threading.Thread(target=churn, daemon=True)
    sys.setswitchinterval(1e-6)  # hand the GIL over as often as it can be
    try:
        churner.start()
        for _ in range(8):
            pid = os.fork()
            if pid == 0:
                os._exit(0)
            os.waitpid(pid, 0)
    finally:
        sys.setswitchinterval(old_interval)
        done.set()
        churner.join(10)
        sys.unraisablehook = old_hook
    assert errors == []
    assert all(token._core.exposed for token in keep)  # type: ignore[union-attr]
