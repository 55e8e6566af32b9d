"""The owner SIGKILLed at random moments: no orphan is left 1 s later.

An owner program runs scopes (or a pool replacing crashed workers) in a
loop and is SIGKILLed after a random delay, so the kill lands at any point
of a scope's life or of a worker's replacement. Every process it started
carries this test's tag in its environment (it is in the owner's
environment block), so survivors are found by a /proc scan, whatever
their ancestry. The guardian must be gone too (its sweep lasts <= 3 s).
Random delays are seeded and printed, so a failure can be replayed.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time

import pytest
from faultkit import program, tagged

ROUNDS = 5


def _left(tag: str) -> list[tuple[int, str]]:
    return [(pid, cmd) for pid, cmd in tagged(tag) if "_guardian.py" not in cmd]


def _guardians(tag: str) -> list[tuple[int, str]]:
    return [(pid, cmd) for pid, cmd in tagged(tag) if "_guardian.py" in cmd]


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.parametrize("mode", ["scope", "pool"])
def test_owner_sigkilled_at_a_random_moment_leaves_no_orphan(mode: str,
                                                             no_leaked_processes: str) -> None:
    tag = no_leaked_processes
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    for round_ in range(ROUNDS):
        owner = subprocess.Popen([sys.executable, program("owner_random.py"), mode],
                                 stdout=subprocess.PIPE, text=True)
        assert owner.stdout is not None
        assert owner.stdout.readline().strip() == "ready"
        delay = rng.random() * 0.6
        time.sleep(delay)  # deliberate: the SIGKILL lands at a random point of the owner's life
        owner.send_signal(signal.SIGKILL)
        owner.wait(10)
        where = f"seed {seed}, round {round_}, killed {delay:.3f} s after ready"
        deadline = time.monotonic() + 1.0
        while _left(tag) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert _left(tag) == [], where
        deadline = time.monotonic() + 5.0
        while _guardians(tag) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _guardians(tag) == [], where
