"""token.wait_async, cancel_on_stop, ThreadPool as loop executor: real loops, threads, processes."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
import time

import pytest

import quiesce
import quiesce.aio
from quiesce._core import _async_wait

from aio_support import LOOPS, run_on


def stop_later(token: quiesce.StopToken, delay: float) -> threading.Thread:
    thread = threading.Thread(target=lambda: (time.sleep(delay), token.stop("later")))
    thread.start()
    return thread


def stop_token(victim: quiesce.StopToken) -> None:
    victim.stop("from a child process")


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.parametrize("loop", LOOPS)
def test_wait_async_wakes_on_a_stop_from_another_thread(loop: str) -> None:
    token = quiesce.StopToken()

    async def main() -> tuple[bool, float]:
        thread = stop_later(token, 0.2)
        started = time.monotonic()
        woke = await token.wait_async()
        took = time.monotonic() - started
        thread.join()
        return woke, took

    woke, took = run_on(loop, main())
    assert woke is True
    assert 0.15 < took < 0.2 + 2.0


@pytest.mark.parametrize("loop", LOOPS)
def test_wait_async_wakes_on_a_stop_from_another_process(loop: str) -> None:
    token = quiesce.StopToken()

    async def main() -> bool:
        async with quiesce.Scope(grace=1.0, kill_after=1.0) as scope:
            scope.process(stop_token, token)
            return await token.wait_async(timeout=20)

    assert run_on(loop, main()) is True
    assert token.reason == "from a child process"


@pytest.mark.parametrize("loop", LOOPS)
def test_wait_async_times_out_and_leaves_nothing_behind(loop: str) -> None:
    token = quiesce.StopToken()

    async def main() -> tuple[bool, float, int, int]:
        before = open_fds()
        started = time.monotonic()
        woke = await token.wait_async(timeout=0.2)
        return woke, time.monotonic() - started, before, open_fds()

    woke, took, fds_before, fds_after = run_on(loop, main())
    assert woke is False
    assert 0.19 < took < 0.2 + 2.0
    assert fds_after == fds_before  # the duplicated fd was closed
    assert not _async_wait._readers


@pytest.mark.parametrize("loop", LOOPS)
def test_a_woken_wait_async_releases_its_fd_within_a_few_loop_turns(loop: str) -> None:
    """The duplicate fd is closed a turn after the wake-up (out of its path), not leaked."""
    token = quiesce.StopToken()

    async def main() -> tuple[int, int, int, bool]:
        before = open_fds()
        waiter = asyncio.ensure_future(token.wait_async())
        await asyncio.sleep(0.01)
        during = open_fds()  # the duplicate, registered with the loop
        stop_later(token, 0.01).join()
        woke = await waiter
        for _ in range(3):
            await asyncio.sleep(0)
        return before, during, open_fds(), woke

    before, during, after, woke = run_on(loop, main())
    assert woke
    assert during >= before + 1  # negative control: the count does see the duplicate
    assert after == before
    assert not _async_wait._readers


def test_wait_async_does_not_poll() -> None:
    """While it waits, the loop sleeps: a handful of iterations, not one per poll tick."""
    iterations = [0]

    class CountingLoop(asyncio.SelectorEventLoop):
        def _run_once(self) -> None:
            iterations[0] += 1
            super()._run_once()  # type: ignore[misc]

    token = quiesce.StopToken()

    async def main() -> bool:
        thread = stop_later(token, 0.5)
        iterations[0] = 0
        woke = await token.wait_async()
        thread.join()
        return woke

    with asyncio.Runner(loop_factory=CountingLoop) as runner:
        assert runner.run(main()) is True
        assert iterations[0] < 10, f"{iterations[0]} loop iterations in 0.5 s: it polls"

        async def poll() -> None:  # negative control: a 10 ms polling wait counts ~50
            iterations[0] = 0
            deadline = time.monotonic() + 0.5
            while time.monotonic() < deadline:
                await asyncio.sleep(0.01)

        runner.run(poll())
        assert iterations[0] > 20


@pytest.mark.parametrize("kind", ["shared", "local"])
@pytest.mark.parametrize("loop", LOOPS)
def test_many_waiters_and_a_users_own_reader_on_the_same_token(loop: str, kind: str) -> None:
    # shared: the loop watches a duplicate of the fd, never the user's own registration;
    # local (a task's or pool task's token): woken through an on_stop callback
    token = quiesce.StopToken() if kind == "shared" else quiesce.StopToken._local()

    async def main() -> tuple[list[bool], bool]:
        running = asyncio.get_running_loop()
        own = running.create_future()
        running.add_reader(token.fileno(), lambda: own.done() or own.set_result(True))
        try:
            waiters = [asyncio.ensure_future(token.wait_async()) for _ in range(5)]
            late = asyncio.ensure_future(token.wait_async(timeout=30))
            await asyncio.sleep(0.05)
            waiters[0].cancel()  # one leaves: the others still wake
            thread = stop_later(token, 0.05)
            results = await asyncio.gather(*waiters[1:], late)
            thread.join()
            return results, await asyncio.wait_for(own, 10)
        finally:
            running.remove_reader(token.fileno())

    results, own_reader_fired = run_on(loop, main())
    assert results == [True] * 5
    assert own_reader_fired


def test_wait_async_checks_its_argument_and_returns_at_once_when_stopped() -> None:
    token = quiesce.StopToken()

    async def main() -> tuple[bool, bool]:
        with pytest.raises(ValueError, match="timeout"):
            await token.wait_async(-1)
        with pytest.raises(TypeError, match="timeout"):
            await token.wait_async("1")  # type: ignore[arg-type]
        zero = await token.wait_async(0)
        token.stop()
        return zero, await token.wait_async(0)

    assert asyncio.run(main()) == (False, True)


def test_wait_async_runs_local_callbacks_of_a_stop_made_elsewhere() -> None:
    token = quiesce.StopToken()
    fired = threading.Event()
    token.on_stop(fired.set)

    async def main() -> bool:
        async with quiesce.Scope(grace=1.0) as scope:
            scope.process(stop_token, token)
            return await token.wait_async(20)

    assert asyncio.run(main())
    assert fired.is_set()


# -- cancel_on_stop ---------------------------------------------------------------------------
@pytest.mark.parametrize("loop", LOOPS)
def test_cancel_on_stop_turns_a_stop_into_stopped(loop: str) -> None:
    token = quiesce.StopToken()
    cleaned = []

    async def main() -> float:
        thread = stop_later(token, 0.1)
        started = time.monotonic()
        try:
            with pytest.raises(quiesce.Stopped, match="later"):
                async with quiesce.aio.cancel_on_stop(token) as watched:
                    assert watched is token
                    try:
                        await asyncio.sleep(30)
                    finally:
                        cleaned.append(True)
            return time.monotonic() - started
        finally:
            thread.join()

    assert run_on(loop, main()) < 0.1 + 2.0
    assert cleaned == [True]


def test_cancel_on_stop_from_another_process_and_of_the_current_token() -> None:
    async def main() -> None:
        async with quiesce.Scope(grace=1.0) as scope:
            outer = quiesce.current_token()
            assert outer is scope.token
            token = quiesce.StopToken()
            with pytest.raises(quiesce.Stopped):
                async with quiesce.aio.cancel_on_stop(token):
                    scope.process(stop_token, token)
                    await asyncio.sleep(30)
            async with quiesce.aio.cancel_on_stop() as watched:  # the current token
                assert watched is scope.token

    asyncio.run(main())


def test_cancel_on_stop_leaves_other_cancellations_and_normal_ends_alone() -> None:
    token = quiesce.StopToken()

    async def main() -> None:
        async with quiesce.aio.cancel_on_stop(token):
            await asyncio.sleep(0.01)  # ends normally: nothing raised
        with pytest.raises(TimeoutError):  # asyncio.timeout's own cancel stays its own
            async with asyncio.timeout(0.05), quiesce.aio.cancel_on_stop(token):
                await asyncio.sleep(30)
        assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]
        token.stop("already")
        await asyncio.sleep(0)
        with pytest.raises(quiesce.Stopped):  # stopped before the block: first await raises
            async with quiesce.aio.cancel_on_stop(token):
                await asyncio.sleep(30)
        with pytest.raises(TypeError, match="token"):
            quiesce.aio.cancel_on_stop("token")  # type: ignore[arg-type]

    asyncio.run(main())


# -- quiesce.ThreadPool as the loop's default executor -----------------------------------------
@pytest.mark.parametrize("loop", LOOPS)
def test_thread_pool_is_a_default_executor_and_to_thread_becomes_stoppable(loop: str) -> None:
    ended = threading.Event()
    seen: list[quiesce.StopToken] = []

    def blocking() -> None:
        seen.append(quiesce.current_token())
        try:
            quiesce.sleep(30)
        finally:
            ended.set()

    async def main() -> float:
        pool = quiesce.ThreadPool(2, grace=5.0)
        assert isinstance(pool, concurrent.futures.ThreadPoolExecutor)
        asyncio.get_running_loop().set_default_executor(pool)
        call = asyncio.ensure_future(asyncio.to_thread(blocking))
        while not seen:
            await asyncio.sleep(0.01)
        started = time.monotonic()
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        await asyncio.get_running_loop().run_in_executor(None, ended.wait, 10)
        pool.stop()
        return time.monotonic() - started

    took = run_on(loop, main())
    assert ended.is_set() and seen[0].stopped
    assert took < 2.0  # the token woke the sleep: no grace needed


def test_plain_thread_pool_executor_cancel_cannot_stop_a_running_call() -> None:
    """Negative control: with the stdlib's executor the cancelled call runs on."""
    release = threading.Event()
    started = threading.Event()

    def blocking() -> str:
        started.set()
        release.wait(10)
        return "ran to the end"

    async def main() -> None:
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            future = pool.submit(blocking)
            wrapped = asyncio.wrap_future(future)
            await asyncio.get_running_loop().run_in_executor(None, started.wait, 10)
            wrapped.cancel()
            await asyncio.sleep(0.1)
            assert not future.done()  # still running: cancel could not reach it
            release.set()

    asyncio.run(main())


def test_every_quiesce_aio_name_is_in_the_reference_with_an_example() -> None:
    import inspect
    from pathlib import Path

    page = (Path(__file__).resolve().parent.parent / "docs" / "reference" / "aio.md").read_text()
    for name in quiesce.aio.__all__:
        assert f"::: quiesce.aio.{name}\n" in page, f"docs/reference/aio.md lacks {name}"
        doc = inspect.getdoc(getattr(quiesce.aio, name)) or ""
        assert "\nExample:\n" in doc, f"quiesce.aio.{name}: its docstring needs an example"
    assert "\nExample:\n" in (inspect.getdoc(quiesce.StopToken.wait_async) or "")
    assert "\nExample:\n" in (inspect.getdoc(quiesce.Scope.task) or "")
