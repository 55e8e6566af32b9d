"""Deadlines for plain code: move_on_after/at, fail_after/at, shield, token deadlines.

Every rule of SPEC's "Deadlines and timeouts for plain code", through the
public API, with real threads, processes, subprocesses and pools. Time
bounds are loose (the machine is shared): "promptly" means well under the
seconds the code would otherwise sleep.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import math
import multiprocessing
import os
import pickle
import selectors
import signal
import subprocess
import sys
import threading
import time
from typing import Any

import pytest

import quiesce
from quiesce._core import _deadline_timer

from deadline_targets import ignore_stops_forever, report_deadline, sleep_on_token, task_deadline

SLACK = 2.0  # seconds of margin for a loaded machine


def _elapsed(since: float) -> float:
    return time.monotonic() - since


# -- the block's own deadline -----------------------------------------------------------

def test_move_on_after_stops_sleep_and_swallows_its_own_stop() -> None:
    started = time.monotonic()
    reached_after = False
    with quiesce.move_on_after(0.2) as cs:
        assert not cs.expired
        quiesce.sleep(30)
        pytest.fail("sleep should have been stopped by the deadline")
    reached_after = True
    assert reached_after and cs.expired and cs.cancelled_caught
    assert 0.2 <= _elapsed(started) < 0.2 + SLACK
    assert not quiesce.stopped()  # the stop belonged to the block, not to the caller


def test_every_kind_of_check_sees_the_deadline() -> None:
    with quiesce.move_on_after(0.1):
        token = quiesce.current_token()
        assert token.deadline is not None
        assert token.wait(30) is True
        assert quiesce.stopped() and token.stopped
        assert "move_on_after(0.1)" in (token.reason or "")
        with pytest.raises(quiesce.Stopped):
            token.raise_if_stopped()
    with quiesce.move_on_after(0.1):
        token = quiesce.current_token()
        with selectors.DefaultSelector() as sel:  # a worker blocked in select wakes too
            sel.register(token.fileno(), selectors.EVENT_READ)
            assert sel.select(30)
        assert token.stopped


def test_unexpired_block_changes_nothing() -> None:
    outer = quiesce.current_token()
    with quiesce.move_on_after(30) as cs:
        inner = quiesce.current_token()
        assert inner is not outer and not inner.stopped
        assert cs.deadline is not None and inner.deadline == cs.deadline
        assert 29 < (inner.remaining() or 0) <= 30
    assert quiesce.current_token() is outer
    assert not cs.expired and not cs.cancelled_caught
    with pytest.raises(ValueError, match="boom"), quiesce.move_on_after(30):
        raise ValueError("boom")


def test_other_exceptions_pass_even_after_the_deadline() -> None:
    with pytest.raises(KeyError), quiesce.move_on_after(0.05) as cs:
        quiesce.current_token().wait(30)
        raise KeyError("not a stop")
    assert cs.expired and not cs.cancelled_caught


def test_fail_after_raises_timeout_error_from_the_stop() -> None:
    started = time.monotonic()
    with pytest.raises(TimeoutError, match=r"fail_after\(0.2\)") as info, quiesce.fail_after(0.2):
        quiesce.sleep(30)
    assert isinstance(info.value.__cause__, quiesce.Stopped)
    assert _elapsed(started) < 0.2 + SLACK
    with quiesce.fail_after(30) as cs:  # negative control: in time, nothing raised
        quiesce.sleep(0.01)
    assert not cs.expired


def test_fail_after_does_not_raise_for_code_that_finished_without_being_stopped() -> None:
    # As trio: the result of code that completed is valid, even late.
    with quiesce.fail_after(0.05) as cs:
        time.sleep(0.2)  # deliberate: runs past the deadline, never looking at the token
    assert cs.expired and not cs.cancelled_caught


def test_fail_at_and_move_on_at_use_the_monotonic_clock() -> None:
    with quiesce.move_on_at(time.monotonic() + 0.1) as cs:
        quiesce.sleep(30)
    assert cs.cancelled_caught
    with pytest.raises(TimeoutError), quiesce.fail_at(time.monotonic() + 0.1):
        quiesce.sleep(30)


def test_a_deadline_already_past_expires_at_once() -> None:
    with quiesce.move_on_at(time.monotonic() - 5) as cs:
        assert quiesce.stopped()  # at entry, not a timer tick later
        quiesce.sleep(30)
    assert cs.expired and cs.cancelled_caught
    with quiesce.move_on_after(0) as cs0:
        assert quiesce.stopped()
    assert cs0.expired and not cs0.cancelled_caught  # nothing was stopped: nothing caught
    with quiesce.move_on_at(-math.inf):
        assert quiesce.stopped()


def test_cancel_ends_the_block_like_its_deadline_from_another_thread() -> None:
    with quiesce.move_on_after(30) as cs:
        threading.Timer(0.1, cs.cancel).start()
        quiesce.sleep(30)
    assert cs.cancelled_caught and cs.expired
    cs2 = quiesce.fail_after(30)
    cs2.cancel()  # before entering: expires on entry
    with pytest.raises(TimeoutError), cs2:
        quiesce.sleep(30)


def test_a_block_can_be_entered_only_once() -> None:
    cs = quiesce.move_on_after(1)
    with cs:
        pass
    with pytest.raises(RuntimeError, match="only once"), cs:
        pass


# -- nesting and stops from above ---------------------------------------------------------

def test_nested_inner_deadline_first_is_swallowed_by_the_inner_block() -> None:
    with quiesce.move_on_after(30) as outer:
        with quiesce.move_on_after(0.1) as inner:
            quiesce.sleep(30)
        assert not quiesce.stopped()
        after_inner = True
    assert after_inner
    assert inner.cancelled_caught and not outer.expired and not outer.cancelled_caught


def test_nested_outer_deadline_propagates_out_of_the_inner_block() -> None:
    started = time.monotonic()
    reached = []
    with quiesce.move_on_after(0.2) as outer:
        with quiesce.move_on_after(30) as inner:
            assert quiesce.current_token().deadline == outer.deadline  # the earliest wins
            quiesce.sleep(30)
        reached.append("after inner")  # must not run: the stop is the outer block's
    assert reached == []
    assert outer.cancelled_caught and not inner.expired and not inner.cancelled_caught
    assert _elapsed(started) < 0.2 + SLACK


def test_equal_deadlines_belong_to_the_outer_block() -> None:
    at = time.monotonic() + 0.1
    with quiesce.move_on_at(at) as outer:
        with quiesce.move_on_at(at) as inner:
            quiesce.sleep(30)
        pytest.fail("the inner block swallowed a stop that was also the outer one's")
    assert outer.cancelled_caught and inner.expired and not inner.cancelled_caught


def test_a_stop_from_above_is_never_swallowed() -> None:
    seen: list[str] = []

    inside = threading.Event()

    def work() -> None:
        with quiesce.move_on_after(0.1) as cs:
            try:
                inside.set()
                quiesce.current_token().wait(30)  # the scope's stop comes first
                seen.append(f"expired={cs.expired}")
                quiesce.sleep(0.3)  # let the block's own deadline pass too
            finally:
                seen.append("left")
        seen.append("after the block")  # must not run: the stop was not the block's

    with quiesce.Scope(grace=5) as scope:
        worker = scope.thread(work)
        assert inside.wait(20)  # the stop reaches the block, not a worker yet to enter it
        scope.stop("from above")
    assert "after the block" not in seen and "left" in seen
    assert worker.ended_by == "stopped"


def test_fail_after_lets_a_stop_from_above_through_as_stopped() -> None:
    outcome: list[BaseException] = []

    inside = threading.Event()

    def work() -> None:
        try:
            with quiesce.fail_after(30):
                inside.set()
                quiesce.sleep(30)
        except BaseException as exc:
            outcome.append(exc)
            raise

    with quiesce.Scope() as scope:
        scope.thread(work)
        assert inside.wait(20)  # the stop reaches the block, not a worker yet to enter it
        scope.stop("shutdown")
    assert len(outcome) == 1 and type(outcome[0]) is quiesce.Stopped
    assert outcome[0].reason == "shutdown"


def test_deadlines_are_per_thread() -> None:
    other: list[float | None] = []
    with quiesce.move_on_after(30):
        thread = threading.Thread(target=lambda: other.append(quiesce.current_token().deadline))
        thread.start()
        thread.join()
    assert other == [None]  # a plain thread does not inherit the block


# -- token.child(timeout), deadline, remaining ----------------------------------------------

def test_token_child_timeout_deadline_and_remaining() -> None:
    root = quiesce.StopToken()
    assert root.deadline is None and root.remaining() is None
    child = root.child(timeout=0.2)
    assert child.deadline is not None and 0 < (child.remaining() or 0) <= 0.2
    later = child.child(timeout=30)
    assert later.deadline == child.deadline  # the earliest along the chain
    sooner = child.child(timeout=0.05)
    assert sooner.deadline is not None and sooner.deadline < child.deadline
    assert sooner.wait(SLACK) and not child.stopped  # its own deadline, not the parent's
    assert later.wait(SLACK) and child.stopped and not root.stopped
    assert child.remaining() == 0.0 and later.reason == "deadline passed"
    assert root.child(timeout=0).stopped  # at once
    assert root.child(timeout=math.inf).deadline is None
    assert root.child(timeout=1e300).deadline is None  # huge: no deadline, no overflow


def test_a_collected_token_leaves_no_timer_entry() -> None:
    before = _deadline_timer.timer().pending()
    tokens = [quiesce.StopToken().child(timeout=3600) for _ in range(50)]
    assert _deadline_timer.timer().pending() >= before + 50
    del tokens
    assert _deadline_timer.timer().pending() <= before  # (an older entry may fire meanwhile)


# -- bad input ------------------------------------------------------------------------------

@pytest.mark.parametrize("make", [quiesce.move_on_after, quiesce.fail_after, quiesce.shield])
@pytest.mark.parametrize(("value", "error", "match"), [
    (-1, ValueError, "seconds must be >= 0"),
    (math.nan, ValueError, "seconds must be a number of seconds >= 0, got NaN"),
    (-math.inf, ValueError, "seconds must be >= 0"),
    ("1", TypeError, "seconds must be a number of seconds, not str"),
    (None, TypeError, "seconds must be a number of seconds, not NoneType"),
    (True, TypeError, "seconds must be a number of seconds, not bool"),
])
def test_bad_seconds_name_the_argument(make: Any, value: object, error: type[Exception],
                                       match: str) -> None:
    with pytest.raises(error, match=match):
        make(value)


@pytest.mark.parametrize("make", [quiesce.move_on_at, quiesce.fail_at])
def test_bad_absolute_deadlines_name_the_argument(make: Any) -> None:
    with pytest.raises(ValueError, match=r"deadline must be a time\.monotonic"):
        make(math.nan)
    with pytest.raises(TypeError, match=r"deadline must be a time\.monotonic.*str"):
        make("soon")
    with pytest.raises(TypeError, match="bool"):
        make(False)


def test_child_timeout_bad_input() -> None:
    token = quiesce.StopToken()
    with pytest.raises(ValueError, match="timeout must be >= 0"):
        token.child(timeout=-0.5)
    with pytest.raises(TypeError, match="timeout must be a number"):
        token.child(timeout="5")  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [math.inf, 1e300, sys.float_info.max])
def test_infinite_and_huge_mean_no_deadline(value: float) -> None:
    for make in (quiesce.move_on_after, quiesce.fail_after, quiesce.move_on_at, quiesce.fail_at):
        with make(value) as cs:
            assert cs.deadline is None and quiesce.current_token().deadline is None
            assert not quiesce.current_token().wait(0.01)
        assert not cs.expired
    with quiesce.shield(value):
        pass


# -- shield ---------------------------------------------------------------------------------

def test_shield_holds_a_stop_from_above_back_for_at_most_its_seconds() -> None:
    log: list[tuple[str, float]] = []

    def work() -> None:
        token = quiesce.current_token()
        token.wait(30)  # stopped from above
        started = time.monotonic()
        with quiesce.shield(0.6) as sh:
            quiesce.sleep(0.2)  # not cut short: the cleanup finishes
            log.append(("short sleep done", _elapsed(started)))
            try:
                quiesce.sleep(30)  # longer than the shield: the stop arrives after 0.6 s
            except quiesce.Stopped as exc:
                log.append((f"delivered: {exc.reason}", _elapsed(started)))
                raise
        assert sh.held_back

    with quiesce.Scope(grace=10) as scope:
        worker = scope.thread(work)
        scope.stop("shutdown")  # before or after work() reaches token.wait: the same
    assert [entry[0] for entry in log] == ["short sleep done", "delivered: shutdown"]
    assert 0.55 <= log[1][1] < 0.6 + SLACK
    assert worker.ended_by == "stopped"


def test_without_a_shield_the_same_cleanup_is_cut_short() -> None:  # the negative control
    outcome: list[str] = []

    def work() -> None:
        quiesce.current_token().wait(30)
        try:
            quiesce.sleep(0.2)
            outcome.append("finished")
        except quiesce.Stopped:
            outcome.append("cut short")

    with quiesce.Scope() as scope:
        scope.thread(work)
        scope.stop()  # before or after work() reaches token.wait: the same
    assert outcome == ["cut short"]


def test_shield_holds_back_an_outer_deadline_and_never_swallows() -> None:
    started = time.monotonic()
    with quiesce.move_on_after(0.1) as cs:
        with quiesce.shield(0.5):
            quiesce.sleep(0.3)  # past the block's deadline, but shielded
            shielded_for = _elapsed(started)
        quiesce.sleep(30)  # the held-back stop is there after the shield
    assert cs.cancelled_caught and shielded_for >= 0.3
    assert _elapsed(started) < 0.4 + SLACK


def test_shield_without_a_stop_is_transparent() -> None:
    with quiesce.shield(1) as sh:
        quiesce.sleep(0.01)
        with quiesce.move_on_after(0.05) as cs:  # blocks inside a shield work as usual
            quiesce.sleep(30)
    assert cs.cancelled_caught and not sh.held_back


# -- propagation into workers -----------------------------------------------------------------

def test_threads_of_a_scope_opened_in_the_block_stop_at_its_deadline() -> None:
    started = time.monotonic()
    with quiesce.move_on_after(0.3) as cs, quiesce.Scope(grace=5) as scope:
        worker = scope.thread(lambda: quiesce.sleep(30))
        assert worker.token.deadline == cs.deadline
        scope.join()
    assert cs.cancelled_caught and worker.ended_by == "stopped"
    assert _elapsed(started) < 0.3 + SLACK


def test_a_worker_started_in_the_block_by_an_outer_scope_ends_at_the_deadline() -> None:
    with quiesce.Scope(grace=0.3, kill_after=2) as scope:
        sibling = scope.thread(lambda: quiesce.current_token().wait(30))
        with quiesce.move_on_after(0.2) as cs:
            process = scope.process(ignore_stops_forever)  # only the ladder ends it
            deadline = cs.deadline
            assert process.token.deadline == deadline
        assert process.join(0.2 + 0.3 + SLACK + 5), "the ladder did not end the process"
        assert process.ended_by == "terminated"
        assert sibling.alive  # the deadline was the block's, not the scope's
        scope.stop()
    assert sibling.ended_by == "stopped"


@pytest.mark.parametrize("method", ["fork", "forkserver", "spawn"])
def test_a_child_process_gets_the_absolute_deadline(method: str) -> None:
    if method not in multiprocessing.get_all_start_methods():
        pytest.skip(f"{method} not available")
    with quiesce.move_on_after(1.0) as cs, quiesce.Scope(mp_context=method) as scope:
        worker = scope.process(report_deadline)
        scope.join()
    deadline, armed, stopped, reason, woke_at = worker.result
    assert deadline == cs.deadline  # the same absolute time
    assert armed >= 1  # the child keeps the deadline on its own timer too
    assert stopped and "deadline passed" in reason
    assert cs.deadline is not None and cs.deadline <= woke_at < cs.deadline + SLACK
    assert cs.cancelled_caught  # scope.join raised the block's Stopped; the block swallowed it


def test_a_block_continued_in_a_forked_child_still_ends_at_its_deadline() -> None:
    # The block's token is local: only the child's own timer (re-armed after
    # fork) can stop the child's copy of it.
    with quiesce.move_on_after(0.3) as cs:
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            code = 3
            try:
                quiesce.sleep(10)
            except quiesce.Stopped:
                code = 0 if cs.deadline is not None and time.monotonic() >= cs.deadline else 4
            finally:
                os._exit(code)
        started = time.monotonic()
        quiesce.sleep(10)
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done or _elapsed(started) > 10 + SLACK:
            break
        time.sleep(0.01)
    if not done:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    assert done and os.waitstatus_to_exitcode(status) == 0
    assert _elapsed(started) < 0.3 + SLACK


def test_a_pickled_token_carries_its_deadline() -> None:
    token = quiesce.StopToken().child(timeout=30)
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_put_deadline, args=(token, queue))
    proc.start()
    try:
        assert queue.get(timeout=30) == token.deadline
    finally:
        proc.join(30)
        queue.close()
        queue.join_thread()
    # A block's own token is local to its process: hand out token.child() instead.
    with pytest.raises(TypeError, match="local to its process"), quiesce.move_on_after(30):
        pickle.dumps(quiesce.current_token())


def _put_deadline(token: quiesce.StopToken, queue: Any) -> None:
    queue.put(token.deadline)


def test_popen_started_in_the_block_ends_at_the_deadline_by_the_ladder() -> None:
    started = time.monotonic()
    with quiesce.Scope(grace=1, kill_after=1) as scope:
        with quiesce.move_on_after(0.3):
            worker = scope.popen(["sleep", "30"])
        assert worker.join(0.3 + SLACK + 2)
        assert worker.ended_by == "terminated"  # SIGTERM to its group at the ladder's step 1
    assert _elapsed(started) < 0.3 + SLACK + 2


def test_run_command_in_a_block_ends_its_tree_at_the_deadline() -> None:
    started = time.monotonic()
    with quiesce.move_on_after(0.3) as cs:
        quiesce.run_command(["sh", "-c", "sleep 30 & sleep 30; wait"],
                            stdout=subprocess.PIPE)
    assert cs.cancelled_caught and _elapsed(started) < 0.3 + SLACK
    with pytest.raises(TimeoutError), quiesce.fail_after(0.2):
        quiesce.run_command(["sleep", "30"])


def test_a_thread_pool_task_submitted_in_the_block_stops_at_its_deadline() -> None:
    with quiesce.ThreadPool(2, grace=2) as pool:
        started = time.monotonic()
        with quiesce.move_on_after(0.3) as cs:
            future = pool.submit(sleep_on_token, 30)
            future.result()  # the task's Stopped ends the block as its own deadline
        assert cs.cancelled_caught and _elapsed(started) < 0.3 + SLACK
        assert isinstance(future.exception(), quiesce.Stopped)
        assert pool.submit(sleep_on_token, 0).result(30) == "slept"  # outside: no deadline
        assert pool.submit(task_deadline).result(30) is None
        with quiesce.move_on_after(30) as cs:
            assert pool.submit(task_deadline).result(30) == cs.deadline


def test_a_process_pool_task_submitted_in_the_block_is_ended_at_its_deadline() -> None:
    with quiesce.ProcessPool(1, grace=0.5, kill_after=2) as pool:
        assert pool.submit(task_deadline).result(60) is None  # warm up; no deadline outside
        started = time.monotonic()
        with quiesce.fail_after(0.3), pytest.raises(quiesce.Stopped):
            pool.submit(ignore_stops_forever).result(60)
        assert _elapsed(started) < 0.3 + SLACK
        assert pool.submit(task_deadline).result(60) is None  # the pool serves on
        with quiesce.move_on_after(30) as cs:  # the task's token has the absolute deadline
            assert pool.submit(task_deadline).result(60) == cs.deadline


# -- async with -----------------------------------------------------------------------------

def test_async_with_cancels_awaits_at_the_deadline() -> None:
    async def main() -> tuple[bool, float]:
        started = time.monotonic()
        async with quiesce.move_on_after(0.2) as cs:
            await asyncio.sleep(30)
        return cs.cancelled_caught, _elapsed(started)

    caught, took = asyncio.run(main())
    assert caught and took < 0.2 + SLACK


def test_async_fail_after_raises_timeout_error_and_outer_cancel_passes() -> None:
    async def fails() -> None:
        async with quiesce.fail_after(0.1):
            await asyncio.sleep(30)

    async def cancelled_from_outside() -> None:
        task = asyncio.current_task()
        assert task is not None
        asyncio.get_running_loop().call_later(0.1, task.cancel)
        async with quiesce.move_on_after(30):
            await asyncio.sleep(30)

    with pytest.raises(TimeoutError):
        asyncio.run(fails())
    with pytest.raises(asyncio.CancelledError):
        asyncio.run(cancelled_from_outside())


def test_async_nested_outer_deadline_goes_to_the_outer_block() -> None:
    async def main() -> tuple[bool, bool, bool]:
        reached = False
        async with quiesce.move_on_after(0.1) as outer:
            async with quiesce.move_on_after(30) as inner:
                await asyncio.sleep(30)
            reached = True
        return outer.cancelled_caught, inner.cancelled_caught, reached

    assert asyncio.run(main()) == (True, False, False)


def test_async_block_lets_a_stop_from_above_out_as_stopped() -> None:
    outcome: list[BaseException] = []

    inside = threading.Event()

    async def amain() -> None:
        async with quiesce.move_on_after(30):
            inside.set()
            await asyncio.sleep(30)  # cancelled when the scope's stop reaches the block

    def work() -> None:
        try:
            asyncio.run(amain())
        except BaseException as exc:
            outcome.append(exc)
            raise

    with quiesce.Scope() as scope:
        worker = scope.thread(work)
        assert inside.wait(20)  # the stop reaches the block, not a loop yet to enter it
        scope.stop("from above")
    assert len(outcome) == 1 and type(outcome[0]) is quiesce.Stopped
    assert outcome[0].reason == "from above" and worker.ended_by == "stopped"


# -- no leaks -------------------------------------------------------------------------------

def _fds() -> int:
    return len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else 0


@pytest.mark.timeout(120)
def test_ten_thousand_blocks_leak_no_thread_fd_or_timer_entry() -> None:
    with quiesce.move_on_after(30):  # warm up: the timer and watcher threads exist
        pass
    gc.collect()  # what earlier tests left for the collector is not ours to count
    threads, fds = threading.active_count(), _fds()
    pending = _deadline_timer.timer().pending()
    for i in range(10_000):  # sequential, half of them expiring
        with quiesce.move_on_after(0 if i % 2 else 3600):
            quiesce.stopped()
    with contextlib.ExitStack() as stack:  # nested 10,000 deep
        for _ in range(10_000):
            stack.enter_context(quiesce.move_on_after(3600))
        assert quiesce.current_token().deadline is not None
        inner_most = quiesce.current_token()
    assert inner_most is not quiesce.current_token()
    for _ in range(1_000):
        with quiesce.shield(5):
            pass
    assert threading.active_count() == threads
    assert _fds() <= fds  # no gc.collect() here: blocks must free what they used at once
    assert _deadline_timer.timer().pending() <= pending


def test_expiry_is_prompt() -> None:
    lateness = []
    for _ in range(20):
        with quiesce.move_on_after(0.01) as cs:
            quiesce.sleep(10)
        assert cs.deadline is not None
        lateness.append(time.monotonic() - cs.deadline)
    lateness.sort()
    assert lateness[len(lateness) // 2] < 0.05, lateness  # the median; the worst is noise


_SIGNAL_PROGRAM = """
import sys, quiesce

def main():
    with quiesce.move_on_after(float(sys.argv[1])) as cs:
        print("ready", flush=True)
        quiesce.sleep(30)
    print("moved on", cs.cancelled_caught, flush=True)
    return 0

quiesce.run(main)
"""


@pytest.mark.parametrize("seconds", ["30", "0.3"])
def test_a_real_sigterm_goes_through_a_block_its_own_deadline_does_not(seconds: str) -> None:
    proc = subprocess.Popen([sys.executable, "-c", _SIGNAL_PROGRAM, seconds],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "ready\n"
        started = time.monotonic()
        if seconds == "30":
            proc.send_signal(signal.SIGTERM)  # a stop from above: never swallowed
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    limit = SLACK if seconds == "30" else 0.3 + SLACK
    assert _elapsed(started) < limit
    if seconds == "30":
        assert proc.returncode == -signal.SIGTERM and "moved on" not in out
    else:  # the negative control: the block's own deadline is swallowed
        assert proc.returncode == 0 and out == "moved on True\n"
