"""async with Scope, scope.task, to_thread / to_process: real loops, threads and processes."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

import quiesce
import quiesce.aio

from aio_support import LOOPS, run_on
from procs import alive

MARGIN = 8.0  # the loose margin every time bound gets (a loaded 2-core machine)


async def forever() -> None:
    await asyncio.sleep(3600)


class Swallower:
    """A task that swallows every cancellation until ``release()``."""

    def __init__(self) -> None:
        self.released = False
        self.cancels = 0

    async def run(self) -> None:
        while not self.released:
            try:
                await asyncio.sleep(0.01)
            except asyncio.CancelledError:
                self.cancels += 1

    def release(self) -> None:
        self.released = True


async def fail_soon(message: str) -> None:
    await asyncio.sleep(0.05)
    raise ValueError(message)


def ignore_token_for(seconds: float) -> None:
    time.sleep(seconds)  # a thread that never looks at its token


def stubborn_process(pid_file: str) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    with open(pid_file, "w") as f:
        f.write(str(os.getpid()))
    while True:
        time.sleep(0.01)


def stop_token_in_child(victim: quiesce.StopToken) -> None:
    victim.stop("from the child")


def square(x: int) -> int:
    return x * x


def raise_value_error() -> None:
    raise ValueError("from the child")


# -- scope.task --------------------------------------------------------------------------------
@pytest.mark.parametrize("loop", LOOPS)
def test_leaving_cancels_the_tasks_with_token_nesting(loop: str) -> None:
    seen: dict[str, Any] = {}

    async def watch(name: str) -> None:
        seen[name] = quiesce.current_token()
        try:
            await asyncio.sleep(3600)
        finally:
            seen[name + " finally"] = True

    async def main() -> quiesce.Scope:
        async with quiesce.Scope(grace=5.0, name="tasks") as scope:
            assert quiesce.current_token() is scope.token
            tasks = [scope.task(watch(f"t{i}")) for i in range(3)]
            result = await scope.task(asyncio.sleep(0.01, result=42))
            assert result == 42
        assert all(t.cancelled() for t in tasks)
        return scope

    started = time.monotonic()
    scope = run_on(loop, main())
    assert time.monotonic() - started < 2.0
    assert all(seen[f"t{i} finally"] for i in range(3))
    tokens = [seen[f"t{i}"] for i in range(3)]
    assert len({id(t) for t in tokens}) == 3 and all(t.stopped for t in tokens)
    report = {r.name: r.ended_by for r in scope.report()}
    assert sorted(report.values()) == ["finished", "stopped", "stopped", "stopped"]
    assert any("watch" in name for name in report)


@pytest.mark.parametrize("loop", LOOPS)
def test_a_task_that_swallows_cancellation_is_abandoned_after_grace(loop: str) -> None:
    swallower = Swallower()

    async def main() -> tuple[float, quiesce.Scope, asyncio.Task[None]]:
        async with quiesce.Scope(grace=0.5, kill_after=30.0) as scope:
            stuck = scope.task(swallower.run())
            await asyncio.sleep(0.05)
            started = time.monotonic()
        took = time.monotonic() - started
        assert not stuck.done()  # abandoned, still running: we did not wait for it
        swallower.release()
        await stuck
        return took, scope, stuck

    took, scope, _ = run_on(loop, main())
    assert 0.45 < took < 0.5 + MARGIN  # grace, never grace + kill_after (30 s)
    [entry] = scope.report()
    assert entry.ended_by == "abandoned"
    assert swallower.cancels == 2  # one on stop, one more at grace


@pytest.mark.parametrize("loop", LOOPS)
def test_a_failing_task_cancels_siblings_and_body_and_is_raised(loop: str) -> None:
    async def main() -> tuple[quiesce.Scope, float]:
        started = time.monotonic()
        with pytest.raises(ValueError, match="boom"):
            async with quiesce.Scope(grace=5.0) as scope:
                scope.task(forever())
                scope.task(fail_soon("boom"))
                await asyncio.sleep(30)  # the body is cancelled too
        return scope, time.monotonic() - started

    scope, took = run_on(loop, main())
    assert took < 2.0
    assert sorted(r.ended_by or "" for r in scope.report()) == ["failed", "stopped"]


def test_several_failures_are_an_exception_group_and_an_awaited_one_is_not_doubled() -> None:
    async def main() -> None:
        with pytest.raises(BaseExceptionGroup) as caught:
            async with quiesce.Scope(grace=5.0) as scope:
                scope.task(fail_soon("one"))
                scope.task(fail_soon("two"))
                await asyncio.sleep(30)
        assert sorted(str(e) for e in caught.value.exceptions) == ["one", "two"]
        with pytest.raises(ValueError, match="awaited"):
            async with quiesce.Scope(grace=5.0) as scope:
                await scope.task(fail_soon("awaited"))

    asyncio.run(main())


def test_a_stop_from_above_cancels_the_body_and_raises_stopped() -> None:
    outer = quiesce.StopToken()

    async def main() -> None:
        threading.Timer(0.1, outer.stop, args=("from above",)).start()
        with pytest.raises(quiesce.Stopped, match="from above"):
            async with quiesce.Scope(grace=5.0, token=outer) as scope:
                scope.task(forever())
                await asyncio.sleep(30)

    asyncio.run(main())


def test_scope_stop_in_the_body_ends_the_block_quietly() -> None:
    async def main() -> None:
        async with quiesce.Scope(grace=5.0) as scope:
            task = scope.task(forever())
            scope.stop()
            await asyncio.sleep(30)  # cancelled by our own stop: no error out of the block
        assert task.cancelled()

    asyncio.run(main())


def test_an_outer_cancellation_still_waits_for_the_ladder_and_stays_a_cancellation() -> None:
    ended = threading.Event()

    def worker() -> None:
        quiesce.sleep(30)

    async def main() -> None:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.1), quiesce.Scope(grace=5.0) as scope:
                scope.thread(worker).token.on_stop(ended.set)
                await asyncio.sleep(30)
        assert not any(w.alive for w in scope.workers)
        assert ended.is_set()

    asyncio.run(main())


def test_task_argument_errors() -> None:
    async def main() -> None:
        async with quiesce.Scope() as scope:
            with pytest.raises(TypeError, match=r"coro must be a coroutine.*call the async"):
                scope.task(forever)  # type: ignore[arg-type]
        with quiesce.Scope() as sync_scope:
            coro = forever()
            with pytest.raises(RuntimeError, match="async with"):
                sync_scope.task(coro)
        with pytest.raises(RuntimeError, match="stopping or closed"):
            scope.task(forever())

    asyncio.run(main())


@pytest.mark.parametrize("loop", LOOPS)
def test_a_task_token_stopped_by_anyone_cancels_that_task_alone(loop: str) -> None:
    """The task itself, another thread, `worker.stop()`: each stop cancels its own task."""

    async def stops_itself() -> None:
        await asyncio.sleep(0.01)
        quiesce.current_token().stop("myself")
        await asyncio.sleep(3600)

    async def main() -> tuple[list[asyncio.Task[None]], list[quiesce.Worker], bool]:
        async with quiesce.Scope(grace=5.0) as scope:
            tasks = [scope.task(stops_itself()), scope.task(forever()), scope.task(forever()),
                     scope.task(forever())]
            workers = scope.workers
            thread = threading.Thread(target=workers[1].token.stop, args=("a thread",))
            thread.start()
            workers[2].stop("worker.stop")
            await asyncio.wait(tasks[:3], timeout=10)
            thread.join()
            bystander_alive = not tasks[3].done() and not workers[3].token.stopped
        return tasks, workers, bystander_alive

    tasks, workers, bystander_alive = run_on(loop, main())
    assert bystander_alive  # negative control: a sibling's stop is not ours
    assert all(t.cancelled() for t in tasks)
    assert [w.token.reason for w in workers[:3]] == ["myself", "a thread", "worker.stop"]
    assert [w.ended_by for w in workers] == ["stopped"] * 4


@pytest.mark.parametrize("loop", LOOPS)
def test_a_stop_from_another_thread_reaches_every_task_and_its_token(loop: str) -> None:
    """The scope's tokens link to no task token: the scope stops them, and cancels them."""
    outer = quiesce.StopToken()
    seen: list[tuple[quiesce.StopToken, bool]] = []

    async def watch() -> None:
        token = quiesce.current_token()
        try:
            await asyncio.sleep(3600)
        finally:
            seen.append((token, token.stopped))  # stopped before the cancel arrives

    async def main() -> tuple[quiesce.Scope, float]:
        started = time.monotonic()
        with pytest.raises(quiesce.Stopped, match="from above"):
            async with quiesce.Scope(grace=5.0, token=outer) as scope:
                for _ in range(50):
                    scope.task(watch())
                await asyncio.sleep(0.01)
                threading.Thread(target=outer.stop, args=("from above",)).start()
                await asyncio.sleep(30)
        return scope, time.monotonic() - started

    scope, took = run_on(loop, main())
    assert took < MARGIN
    assert len(seen) == 50 and all(stopped for _, stopped in seen)
    assert {token.reason for token, _ in seen} == {"from above"}
    assert {r.ended_by for r in scope.report()} == {"stopped"}


@pytest.mark.parametrize("loop", LOOPS)
def test_the_token_of_a_task_that_finished_still_stops_with_its_scope(loop: str) -> None:
    """What a finished task left below its token (here a child token) stops with the scope."""

    async def leave_a_child() -> quiesce.StopToken:
        return quiesce.current_token().child()

    async def main() -> tuple[quiesce.StopToken, bool]:
        async with quiesce.Scope(grace=5.0) as scope:
            child = await scope.task(leave_a_child())
            scope.task(forever())
            running_then = not child.stopped
        return child, running_then

    child, running_then = run_on(loop, main())
    assert running_then  # negative control: not stopped by the task's own end
    assert child.stopped


def test_a_task_token_stays_in_its_process_and_a_child_of_it_crosses(tmp_path: Any) -> None:
    """A task's token is local (no fd): sent to a process it says to pass `child()`, which works."""
    import pickle

    async def main() -> tuple[str, str]:
        token = quiesce.current_token()
        with pytest.raises(TypeError, match=r"child\(\)") as refused:
            pickle.dumps(token)
        async with quiesce.Scope(grace=5.0) as inner:
            child = token.child()
            worker = inner.process(stop_token_in_child, child)
            await quiesce.aio.to_thread(worker.join, 30)
        return str(refused.value), child.reason or ""

    async def outer() -> tuple[str, str]:
        async with quiesce.Scope(grace=5.0) as scope:
            return await scope.task(main())

    message, reason = asyncio.run(outer())
    assert "local" in message
    assert reason == "from the child"  # the child's stop reached this process


def test_a_task_shares_its_scopes_deadline() -> None:
    async def main() -> tuple[float | None, float | None, bool]:
        async with quiesce.move_on_after(0.2), quiesce.Scope(grace=5.0) as scope:
            task = scope.task(forever())
            [worker] = scope.workers
            await asyncio.sleep(30)
        return scope.token.deadline, worker.token.deadline, task.cancelled()

    scope_deadline, task_deadline, cancelled = asyncio.run(main())
    assert scope_deadline is not None and task_deadline == scope_deadline
    assert cancelled


@pytest.mark.parametrize("loop", LOOPS)
def test_a_task_that_fails_while_being_cancelled_is_raised_and_reported(loop: str) -> None:
    async def fail_on_cancel() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            raise ValueError("while cancelled") from None

    async def main() -> quiesce.Scope:
        with pytest.raises(ValueError, match="while cancelled"):
            async with quiesce.Scope(grace=5.0) as scope:
                scope.task(forever())
                scope.task(fail_on_cancel())
                scope.task(forever())
                await asyncio.sleep(0.01)
        return scope

    scope = run_on(loop, main())
    assert [r.ended_by for r in scope.report()] == ["stopped", "failed", "stopped"]


def test_join_a_task_from_another_thread() -> None:
    """`worker.join` (another thread) waits for the task, though its end is a flag on the loop."""
    results: list[bool] = []

    async def main() -> None:
        async with quiesce.Scope(grace=5.0) as scope:
            release = asyncio.Event()
            scope.task(release.wait())
            [worker] = scope.workers
            joined = threading.Event()

            def join() -> None:
                results.append(worker.join(timeout=0.05))  # still running
                joined.set()
                results.append(worker.join(timeout=10))

            thread = threading.Thread(target=join)
            thread.start()
            while not joined.is_set():
                await asyncio.sleep(0.005)
            release.set()
            await asyncio.sleep(0.01)
            thread.join()  # returns at once: the task has ended
        assert worker.ended_by == "finished"

    asyncio.run(main())
    assert results == [False, True]


# -- the loop keeps ticking ----------------------------------------------------------------------
class Heartbeat:
    """A 5 ms heartbeat coroutine; ``gaps`` are recorded only while ``measuring``."""

    def __init__(self) -> None:
        self.measuring = False
        self.gaps: list[float] = []

    async def run(self) -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.005)
            now = time.monotonic()
            if self.measuring:
                self.gaps.append(now - last)
            last = now


def max_gap_while_leaving(enter_and_leave: Callable[[Heartbeat], Coroutine[Any, Any, None]]
                          ) -> tuple[float, int]:
    """Run the body with a heartbeat; it sets ``measuring`` just before leaving its scope."""

    async def main() -> tuple[float, int]:
        heart = Heartbeat()
        beat = asyncio.ensure_future(heart.run())
        await asyncio.sleep(0.02)  # beating
        await enter_and_leave(heart)
        await asyncio.sleep(0.05)  # let the heartbeat see the gap the exit may have made
        heart.measuring = False
        beat.cancel()
        return max(heart.gaps), len(heart.gaps)

    return asyncio.run(main())


def test_the_loop_keeps_ticking_while_the_ladder_runs(tmp_path: Any) -> None:
    swallower = Swallower()

    async def body(heart: Heartbeat) -> None:
        async with quiesce.Scope(grace=0.6, kill_after=0.4) as scope:
            scope.thread(ignore_token_for, 1.5)  # outlives the whole ladder: abandoned
            scope.process(stubborn_process, str(tmp_path / "pid"))
            scope.task(swallower.run())
            while not (tmp_path / "pid").exists():
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.05)
            heart.measuring = True
        swallower.release()

    gap, beats = max_gap_while_leaving(body)
    assert beats > 50  # the ladder ran ~1 s: the heartbeat kept beating through it
    assert gap < 0.1, f"the loop stalled {gap * 1000:.0f} ms during the ladder"


def test_negative_control_a_sync_scope_in_a_coroutine_stalls_the_loop() -> None:
    async def body(heart: Heartbeat) -> None:
        with quiesce.Scope(grace=0.3) as scope:
            scope.thread(ignore_token_for, 0.5)
            heart.measuring = True

    gap, _ = max_gap_while_leaving(body)
    assert gap > 0.25


# -- threads, processes, popen and pools in an async scope -----------------------------------
def test_threads_processes_popen_and_pools_work_as_in_sync_code(tmp_path: Any) -> None:
    async def main() -> quiesce.Scope:
        async with quiesce.Scope(grace=0.3, kill_after=0.5) as scope:
            scope.thread(quiesce.sleep, 30)
            scope.process(stubborn_process, str(tmp_path / "pid"))
            scope.popen(["sleep", "30"])
            pool = scope.thread_pool(2)
            future = pool.submit(quiesce.sleep, 30)
            while not (tmp_path / "pid").exists():
                await asyncio.sleep(0.01)
        assert future.done()
        return scope

    started = time.monotonic()
    scope = asyncio.run(main())
    assert time.monotonic() - started < 0.3 + 0.5 + MARGIN
    pid = int((tmp_path / "pid").read_text())
    assert not alive(pid)
    left = [t.name for t in threading.enumerate() if t.name.startswith(scope.name + "/")]
    assert not left, f"threads left after the block: {left}"
    endings = {r.kind: r.ended_by for r in scope.report()}
    assert endings == {"thread": "stopped", "process": "killed", "subprocess": "terminated",
                       "pool": "stopped"}


# -- to_thread / to_process --------------------------------------------------------------------
@pytest.mark.parametrize("loop", LOOPS)
def test_to_thread_returns_raises_and_is_stopped_by_cancel(loop: str) -> None:
    tokens: list[quiesce.StopToken] = []

    def wait_for_stop(token: quiesce.StopToken) -> str:
        tokens.append(token)
        assert quiesce.current_token() is token
        token.wait(30)
        return "stopped in time"

    async def main() -> float:
        assert await quiesce.aio.to_thread(square, 7) == 49
        with pytest.raises(ValueError, match="from the child"):
            await quiesce.aio.to_thread(raise_value_error)
        call = asyncio.ensure_future(quiesce.aio.to_thread(wait_for_stop))
        while not tokens:
            await asyncio.sleep(0.01)
        started = time.monotonic()
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        return time.monotonic() - started

    took = run_on(loop, main())
    assert tokens[0].stopped and took < 2.0


def test_to_thread_abandons_a_thread_that_ignores_its_token_after_grace() -> None:
    release = threading.Event()
    running = threading.Event()

    def stuck() -> None:
        running.set()
        release.wait(30)

    async def main() -> float:
        call = asyncio.ensure_future(quiesce.aio.to_thread(stuck, grace=0.4, kill_after=30))
        while not running.is_set():
            await asyncio.sleep(0.01)
        started = time.monotonic()
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        return time.monotonic() - started

    took = asyncio.run(main())
    stuck_threads = [t for t in threading.enumerate() if "stuck" in t.name]
    assert stuck_threads and all(t.daemon for t in stuck_threads)  # never holds exit
    release.set()
    assert 0.35 < took < 0.4 + MARGIN  # grace, not grace + kill_after


@pytest.mark.parametrize("loop", LOOPS)
def test_to_process_returns_raises_and_a_cancel_runs_the_ladder(loop: str, tmp_path: Any) -> None:
    pid_file = tmp_path / "pid"

    async def main() -> float:
        assert await quiesce.aio.to_process(square, 9) == 81
        with pytest.raises(ValueError, match="from the child"):
            await quiesce.aio.to_process(raise_value_error)
        call = asyncio.ensure_future(quiesce.aio.to_process(
            stubborn_process, str(pid_file), grace=0.3, kill_after=0.3))
        while not pid_file.exists():
            await asyncio.sleep(0.01)
        started = time.monotonic()
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        return time.monotonic() - started

    took = run_on(loop, main())
    assert not alive(int(pid_file.read_text()))  # SIGTERM ignored: SIGKILLed, and reaped
    assert 0.5 < took < 0.3 + 0.3 + MARGIN


def test_to_process_refuses_what_it_cannot_pickle() -> None:
    async def main() -> None:
        with pytest.raises(TypeError, match="pickl"):
            await quiesce.aio.to_process(lambda: 1)
        with pytest.raises(TypeError, match="fn must be callable"):
            await quiesce.aio.to_thread(3)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="grace"):
            await quiesce.aio.to_thread(square, 1, grace=-1)

    asyncio.run(main())


def test_a_scope_of_tasks_still_shuts_down_its_idle_pool() -> None:
    async def main() -> quiesce.ThreadPool:
        async with quiesce.Scope(grace=5.0) as scope:
            pool = scope.thread_pool(1)
            assert pool.submit(square, 3).result() == 9
            scope.task(forever())
        return pool

    pool = asyncio.run(main())
    with pytest.raises(RuntimeError, match="cannot submit"):
        pool.submit(square, 1)


def test_deadline_blocks_around_async_scopes_and_to_thread() -> None:
    """`async with move_on_after/fail_after` (the deadlines feature) reaches tasks and threads."""

    async def main() -> None:
        started = time.monotonic()
        async with quiesce.move_on_after(0.2) as cs, quiesce.Scope(grace=5.0) as scope:
            task = scope.task(forever())
            await asyncio.sleep(30)
        assert cs.expired and task.cancelled()
        assert [r.ended_by for r in scope.report()] == ["stopped"]
        with pytest.raises(TimeoutError):
            async with quiesce.fail_after(0.2):
                await quiesce.aio.to_thread(quiesce.sleep, 30)
        assert time.monotonic() - started < 0.4 + MARGIN

    asyncio.run(main())


def test_a_second_signal_cuts_the_grace_a_scope_of_tasks_waits() -> None:
    """What a second signal does (hurry every scope) ends the on-loop wait for tasks."""
    from quiesce._scope._live_scopes import hurry_all_scopes

    swallower = Swallower()

    async def main() -> float:
        async with quiesce.Scope(grace=30.0) as scope:
            stuck = scope.task(swallower.run())
            await asyncio.sleep(0.05)
            threading.Timer(0.3, hurry_all_scopes).start()
            started = time.monotonic()
        took = time.monotonic() - started
        swallower.release()
        await stuck
        return took

    assert asyncio.run(main()) < MARGIN  # not the 30 s grace


def test_to_thread_never_loses_the_error_of_a_thread_that_just_ended() -> None:
    """The thread's `alive` turns False a moment before its scope records its error."""

    async def main() -> int:
        raised = 0
        for _ in range(200):
            try:
                await quiesce.aio.to_thread(raise_value_error)
            except ValueError:
                raised += 1
        return raised

    assert asyncio.run(main()) == 200
