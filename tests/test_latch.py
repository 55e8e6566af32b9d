"""The latch behind token waits and worker joins (``quiesce._core._latch``), on real threads."""

from __future__ import annotations

import os
import threading
import time

from quiesce._core._latch import Latch

from procs import wait_for


def _sleepers(latch: Latch, count: int, timeout: float | None = 30.0
              ) -> tuple[list[threading.Thread], list[bool]]:
    """``count`` threads in ``latch.wait(timeout)``, returned once each sleeps on its lock."""
    woke: list[bool] = []
    threads = [threading.Thread(target=lambda: woke.append(latch.wait(timeout)), daemon=True)
               for _ in range(count)]
    for thread in threads:
        thread.start()
    wait_for(lambda: len(latch._waiters) == count, f"{count} waiters on the latch", timeout=10)
    return threads, woke


def test_open_wakes_every_sleeping_waiter() -> None:
    latch = Latch()
    threads, woke = _sleepers(latch, 20)
    latch.open()
    for thread in threads:
        thread.join(10)
    assert woke == [True] * 20
    assert latch._waiters == []  # open() let go of every lock


def test_a_waiter_after_open_returns_at_once_and_leaves_no_lock() -> None:
    latch = Latch()
    latch.open()
    started = time.monotonic()
    assert latch.wait(30.0)
    assert latch.wait(None)
    assert time.monotonic() - started < 5
    assert latch._waiters == []


def test_a_closed_latch_times_out_false_and_forgets_the_waiter() -> None:
    latch = Latch()
    started = time.monotonic()
    assert latch.wait(0.05) is False
    assert time.monotonic() - started >= 0.05
    assert latch._waiters == []  # a timed-out waiter takes its lock back off the list
    assert latch.wait(0) is False


def _open_from_racing_threads(latch: Latch, count: int) -> list[BaseException]:
    barrier = threading.Barrier(count)
    errors: list[BaseException] = []

    def opener() -> None:
        barrier.wait()
        try:
            latch.open()
        except BaseException as exc:  # pragma: no cover - the failure being tested
            errors.append(exc)

    openers = [threading.Thread(target=opener) for _ in range(count)]
    for thread in openers:
        thread.start()
    for thread in openers:
        thread.join(10)
    return errors


def test_opening_twice_from_racing_threads_never_raises() -> None:
    for _ in range(50):
        latch = Latch()
        threads, woke = _sleepers(latch, 3)
        assert _open_from_racing_threads(latch, 4) == []
        for thread in threads:
            thread.join(10)
        assert woke == [True] * 3


def _race_open_against_timeouts(latch: Latch) -> tuple[list[bool], list[bool]]:
    """Long waiters asleep, short ones timing out (and taking their locks off the list)
    while the latch opens; returns what each kind got."""
    longs, long_got = _sleepers(latch, 3, timeout=30.0)
    short_got: list[bool] = []

    def short() -> None:
        while not latch.is_open:
            if latch.wait(0.0002):
                break
        short_got.append(latch.is_open)

    shorts = [threading.Thread(target=short) for _ in range(3)]
    for thread in shorts:
        thread.start()
    latch.open()
    for thread in longs + shorts:
        thread.join(10)  # a long waiter open() skipped would sleep its 30 s
    return long_got, short_got


def test_waiters_timing_out_while_it_opens_never_hide_another_waiter() -> None:
    for _ in range(100):
        long_got, short_got = _race_open_against_timeouts(Latch())
        assert long_got == [True] * 3
        assert short_got == [True] * 3


def test_a_forked_child_has_its_own_copy() -> None:
    """Closed at the fork: the child opens its copy (waking its own waiter), the parent's
    stays closed; open at the fork: the child's copy is open."""
    closed, opened = Latch(), Latch()
    opened.open()
    pid = os.fork()
    if pid == 0:  # the child: no pytest from here on, only an exit status
        code = 1
        try:
            if opened.wait(0) and not closed.wait(0):
                waiter = threading.Thread(target=closed.wait, args=(30.0,))
                waiter.start()
                closed.open()
                waiter.join(10)
                code = 0 if closed.wait(0) and not waiter.is_alive() else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert not closed.wait(0)  # the child's open() was its own
