"""StopToken: one-shot stop requests across threads and processes."""

from __future__ import annotations

import contextlib
import math
import multiprocessing
import os
import pickle
import select
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import quiesce

from targets import (
    report_wait,
    spin_on_stopped,
    stop_token,
    stop_when_told,
    waits_for_own_callback,
)

START_METHODS = multiprocessing.get_all_start_methods()


def test_stop_is_one_shot_and_keeps_first_reason() -> None:
    token = quiesce.StopToken()
    assert not token.stopped and token.reason is None
    token.stop("first")
    token.stop("second")
    assert token.stopped
    assert token.reason == "first"


def test_stop_without_reason_has_none() -> None:
    token = quiesce.StopToken()
    token.stop()
    assert token.stopped and token.reason is None


@given(st.text(max_size=400))
@settings(max_examples=60, deadline=None)
def test_reason_round_trips_through_shared_memory(reason: str) -> None:
    token = quiesce.StopToken()
    token.stop(reason)
    encoded = reason.encode("utf-8", "replace")[:253]
    assert token.reason == encoded.decode("utf-8", "replace")
    if len(reason.encode("utf-8", "replace")) <= 253:
        assert token.reason == reason.encode("utf-8", "replace").decode("utf-8", "replace")


def test_wait_times_out_false_then_true_once_stopped() -> None:
    token = quiesce.StopToken()
    assert token.wait(0.05) is False
    threading.Timer(0.1, token.stop).start()
    started = time.monotonic()
    assert token.wait(30) is True
    assert time.monotonic() - started < 10  # woke on stop, not on the 30 s timeout


def test_raise_if_stopped() -> None:
    token = quiesce.StopToken()
    token.raise_if_stopped()
    token.stop("enough")
    with pytest.raises(quiesce.Stopped) as info:
        token.raise_if_stopped()
    assert info.value.reason == "enough"
    assert not isinstance(info.value, Exception)  # BaseException, like KeyboardInterrupt


def test_on_stop_runs_once_and_at_once_if_already_stopped() -> None:
    token = quiesce.StopToken()
    calls: list[str] = []
    token.on_stop(lambda: calls.append("a"))
    token.stop()
    token.stop()
    assert calls == ["a"]
    token.on_stop(lambda: calls.append("late"))
    assert calls == ["a", "late"]


def test_on_stop_cancel_removes_callback() -> None:
    token = quiesce.StopToken()
    calls: list[str] = []
    handle = token.on_stop(lambda: calls.append("x"))
    assert handle.cancel() is True
    assert handle.cancel() is False
    token.stop()
    assert calls == []


def test_failing_callback_does_not_break_stop(caplog: pytest.LogCaptureFixture) -> None:
    token = quiesce.StopToken()
    calls: list[str] = []
    token.on_stop(lambda: 1 / 0)
    token.on_stop(lambda: calls.append("second"))
    token.stop()
    assert calls == ["second"]
    assert "on_stop callback raised" in caplog.text


def test_child_stops_with_parent_not_the_reverse() -> None:
    parent = quiesce.StopToken()
    child = parent.child()
    grandchild = child.child()
    child2 = parent.child()
    child2.stop("only me")
    assert not parent.stopped
    parent.stop("from parent")
    assert child.stopped and grandchild.stopped
    assert grandchild.reason == "from parent"
    assert child2.reason == "only me"


def test_fileno_becomes_readable_on_stop() -> None:
    token = quiesce.StopToken()
    r, _, _ = select.select([token], [], [], 0)
    assert r == []
    threading.Timer(0.05, token.stop).start()
    r, _, _ = select.select([token], [], [], 30)
    assert r == [token]


def test_local_token_fileno_and_pickle_error() -> None:
    token = quiesce.StopToken._local()
    fd = token.fileno()
    assert select.select([fd], [], [], 0)[0] == []
    token.stop("x")
    assert select.select([fd], [], [], 5)[0] == [fd]
    with pytest.raises(TypeError, match=r"token.child\(\)"):
        pickle.dumps(token)


@pytest.mark.parametrize("bad", [-1, math.nan, math.inf, "soon"])
def test_wait_rejects_bad_timeouts(bad: object) -> None:
    token = quiesce.StopToken()
    with pytest.raises((ValueError, TypeError), match="timeout"):
        token.wait(bad)  # type: ignore[arg-type]


def test_bad_callback_and_reason() -> None:
    token = quiesce.StopToken()
    with pytest.raises(TypeError, match="callback must be callable"):
        token.on_stop(42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="reason"):
        token.stop(3)  # type: ignore[arg-type]


@contextlib.contextmanager
def running(proc: multiprocessing.process.BaseProcess) -> Iterator[None]:
    """Start ``proc``; afterwards join it (killed if it is still alive after 30 s)."""
    proc.start()
    try:
        yield
    finally:
        proc.join(30)
        if proc.is_alive():
            proc.kill()
            proc.join()


@pytest.mark.parametrize("method", START_METHODS)
def test_parent_stop_wakes_child_process(method: str) -> None:
    ctx = multiprocessing.get_context(method)
    token = quiesce.StopToken()
    queue = ctx.Queue()
    proc = ctx.Process(target=report_wait, args=(token, queue))
    with running(proc):
        assert queue.get(timeout=30)[0] == "waiting"
        token.stop(f"stop via {method}")
        kind, woke, reason, _elapsed = queue.get(timeout=30)
        assert (kind, woke, reason) == ("woke", True, f"stop via {method}")
    assert proc.exitcode == 0


@pytest.mark.parametrize("method", START_METHODS)
def test_child_stop_reaches_parent_and_its_callbacks(method: str) -> None:
    ctx = multiprocessing.get_context(method)
    token = quiesce.StopToken()
    fired = threading.Event()
    token.on_stop(fired.set)
    child_token = token.child()
    proc = ctx.Process(target=stop_token, args=(token, f"child {method}"))
    proc.start()
    proc.join(30)
    assert proc.exitcode == 0
    assert token.wait(10) and token.reason == f"child {method}"
    # The callback runs in the watcher thread even if nobody waits on the token.
    assert fired.wait(10)
    assert child_token.wait(10)


@pytest.mark.parametrize("method", START_METHODS)
def test_a_child_spinning_on_stopped_sees_the_parents_stop(method: str) -> None:
    """``stopped`` is a plain attribute; a stop made in another process must still flip it."""
    ctx = multiprocessing.get_context(method)
    token = quiesce.StopToken()
    queue = ctx.Queue()
    proc = ctx.Process(target=spin_on_stopped, args=(token, queue))
    with running(proc):
        assert queue.get(timeout=30)[0] == "spinning"
        token.stop("parent")
        assert queue.get(timeout=30) == ("saw", True)


@pytest.mark.parametrize("method", START_METHODS)
def test_the_parent_spinning_on_stopped_sees_a_childs_stop(method: str) -> None:
    ctx = multiprocessing.get_context(method)
    token = quiesce.StopToken()
    go = ctx.Event()
    proc = ctx.Process(target=stop_when_told, args=(token, go))
    with running(proc):
        assert not token.stopped
        go.set()
        deadline = time.monotonic() + 30
        while not token.stopped and time.monotonic() < deadline:
            pass
        assert token.stopped and token.reason == "from the child"


@pytest.mark.parametrize("method", START_METHODS)
def test_on_stop_inside_a_scope_process_runs_on_the_owners_stop(method: str) -> None:
    """Regression: under fork the child's watcher ran the parent's inherited scope callback,
    blocked on a lock held at fork time, and the child's own callbacks never ran."""
    with quiesce.Scope(grace=60, kill_after=1, mp_context=method) as scope:
        worker = scope.process(waits_for_own_callback)
        scope.stop()  # registered before or after this stop, the callback must run
        assert worker.join(20), "the child's on_stop callback did not run before the grace"
    assert (worker.ended_by, worker.result) == ("stopped", "callback ran")


def test_callbacks_registered_before_a_fork_run_only_in_the_parent() -> None:
    token = quiesce.StopToken()
    r, w = os.pipe()
    token.on_stop(lambda: os.write(w, f"{os.getpid()}\n".encode()))
    pid = os.fork()
    if pid == 0:  # the child: wait for the parent's stop, give a callback time to misfire
        try:
            token.wait(10)
            time.sleep(0.2)
        finally:
            os._exit(0)
    token.stop("parent")
    os.waitpid(pid, 0)
    os.close(w)
    with os.fdopen(r) as lines:
        assert lines.read().split() == [str(os.getpid())]


def test_a_token_only_this_process_holds_is_not_watched() -> None:
    """Thread tokens cost the watcher nothing; a pickled one is watched (negative control)."""
    local_only = quiesce.StopToken()
    local_only.on_stop(lambda: None)
    assert not local_only._watched
    sent = quiesce.StopToken()
    pickle.dumps(sent)
    assert sent._watched


def test_current_token_outside_workers_is_root_and_sleep_raises() -> None:
    root = quiesce.current_token()
    assert root is quiesce.current_token()
    assert quiesce.stopped() is False
    token = quiesce.StopToken()
    from quiesce._core._context import using

    with using(token):
        assert quiesce.current_token() is token
        threading.Timer(0.05, token.stop, args=("wake",)).start()
        with pytest.raises(quiesce.Stopped, match="wake"):
            quiesce.sleep(30)
        assert quiesce.stopped()
    assert quiesce.current_token() is root


def test_sleep_rejects_negative() -> None:
    with pytest.raises(ValueError, match="seconds"):
        quiesce.sleep(-0.1)


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_dropped_tokens_release_their_fds() -> None:
    import gc

    for _ in range(50):  # warm up: arenas, watcher thread
        quiesce.StopToken().child().on_stop(lambda: None)
    gc.collect()
    time.sleep(0.1)  # let the warm-up settle: a count taken early is higher, the check laxer
    before = _open_fds()
    for _ in range(2000):
        t = quiesce.StopToken()
        c = t.child()
        c.on_stop(lambda: None)
        del t, c
    gc.collect()
    deadline = time.monotonic() + 5
    while _open_fds() > before + 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _open_fds() <= before + 2



_ROOT_VIEW_PROGRAM = r"""
import os, signal, threading, time
import quiesce
from quiesce._core import _context

def in_thread():
    seen = []
    t = threading.Thread(target=lambda: seen.append(quiesce.stopped()))  # a fresh context
    t.start(); t.join()
    return seen[0]

def spin():  # in a quiesce child, outside any scope: the root is the worker's token
    while not quiesce.stopped():
        time.sleep(0.001)

if __name__ == "__main__":
    print("before", quiesce.stopped(), in_thread(), flush=True)
    old = quiesce.current_token()
    _context.set_root_token(quiesce.StopToken())
    old.stop("the replaced root")  # not the root any more: stopped() must not see it
    print("replaced", quiesce.stopped(), flush=True)
    with quiesce.handle_signals():
        signal.raise_signal(signal.SIGTERM)
        quiesce.current_token().wait(10)
        print("after", quiesce.stopped(), in_thread(), flush=True)
    pid = os.fork()
    if pid == 0:
        print("forked", quiesce.stopped(), flush=True)  # a fresh root in the child
        os._exit(0)
    os.waitpid(pid, 0)
    _context.set_root_token(quiesce.StopToken())
    with quiesce.Scope(grace=30, kill_after=1, mp_context="spawn") as scope:
        worker = scope.process(spin)  # stopped from here: another process
    print("child", worker.ended_by, flush=True)
"""


def test_stopped_outside_workers_follows_the_root_only(tmp_path: Path) -> None:
    """`quiesce.stopped()` outside any worker reads a view of the root token: it must follow
    the root (a signal, any thread, a stop from another process), not a replaced root, and
    start fresh after a fork. A child whose view missed the stop would end by SIGTERM only
    after the 30 s grace ("terminated"), not by itself ("stopped")."""
    script = tmp_path / "root_view.py"
    script.write_text(_ROOT_VIEW_PROGRAM)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=50)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "before False False", "replaced False", "after True True", "forked False",
        "child stopped"]


_COLLECTION_INSIDE = r"""
import gc, quiesce
parent = quiesce.StopToken()
handles = [parent.on_stop(lambda: None) for _ in range(200)]

def finalizer_like(phase, info):  # what a collected child token's finalizer does
    if phase == "start" and handles:
        handles.pop().cancel()

callbacks = [lambda: None for _ in range(100)]
on_stop = parent.on_stop
gc.callbacks.append(finalizer_like)
gc.set_threshold(1)  # a collection at (almost) every allocation, under the token's lock too
for callback in callbacks:
    on_stop(callback)
parent.stop()
gc.callbacks.remove(finalizer_like)
print("done", flush=True)
"""


def test_a_collection_inside_on_stop_or_stop_cannot_deadlock() -> None:
    """A garbage collection may run inside any allocation, and a collected child's
    finalizer cancels its link on the parent, taking the parent's lock. Seen once as a
    hung suite (gdb: on_stop -> StopHandle() -> gc -> finalize -> _remove_callback).
    Negative control: the lock non-reentrant and the handle made under it: hangs."""
    done = subprocess.run([sys.executable, "-c", _COLLECTION_INSIDE], capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "done\n"
