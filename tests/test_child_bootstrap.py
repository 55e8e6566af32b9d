"""What a scope's child process carries: its imports, its threads, the token keyword."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import quiesce
from quiesce._scope._scope import Scope

from child_targets import (
    nothing,
    one,
    sigterm_then_token,
    sigterm_without_threads,
    takes_anything,
    takes_token,
    token_named_but_given,
    tokens_both_ways,
)
from procs import stat_fields, state, wait_for, wait_for_file

PROGRAMS = Path(__file__).parent / "programs"
METHODS = [m for m in ("fork", "forkserver", "spawn")
           if m in multiprocessing.get_all_start_methods()]
# Modules a child does not need (each one costs at its start and again at its exit).
NOT_NEEDED = ("psutil", "inspect", "uuid", "traceback", "queue", "ast", "tokenize")
# Tokens among the arguments travel the start method's way, not by the resource sharer
# (but under spawn, see _pickling.pickle_call).
NOT_NEEDED_FOR_TOKENS = ("hmac", "multiprocessing.resource_sharer")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="psutil is needed off procfs")
@pytest.mark.parametrize("method", [m for m in METHODS if m != "fork"])
def test_a_child_imports_only_what_it_needs(method: str) -> None:
    # Under fork a child has whatever its owner had; forkserver and spawn start afresh.
    out = subprocess.run([sys.executable, str(PROGRAMS / "child_modules.py"), method],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    loaded = set(json.loads(out))
    assert "quiesce._proc._child" in loaded  # the list is the child's, after its bootstrap
    assert sorted(loaded.intersection(NOT_NEEDED)) == []
    tokens_way = sorted(loaded.intersection(NOT_NEEDED_FOR_TOKENS))
    assert tokens_way == ([] if method == "forkserver" else list(NOT_NEEDED_FOR_TOKENS))


@pytest.mark.parametrize("method", METHODS)
def test_the_token_keyword_reaches_a_child_under_each_start_method(method: str) -> None:
    with Scope(mp_context=method) as scope:
        declared = scope.process(takes_token)
        not_declared = scope.process(takes_anything, 1)
        given = scope.process(token_named_but_given, token="mine")
        scope.join(60)
    assert declared.result is True
    assert not_declared.result == []  # **kwargs does not ask for it
    assert given.result == "mine"  # an explicit token= wins


@pytest.mark.parametrize("method", METHODS)
def test_tokens_among_the_arguments_work_both_ways_under_each_start_method(method: str) -> None:
    mine, other = quiesce.StopToken(), quiesce.StopToken()
    with Scope(mp_context=method) as scope:
        worker = scope.process(tokens_both_ways, mine, {"other": other}, same=mine)
        mine.stop("stopped in the owner")
        assert other.wait(30)  # the child's stop reached the owner
        scope.join(60)
    assert other.stopped and other.reason == "stopped in the child"
    assert worker.result == {"same": True, "woke": True, "reason": "stopped in the owner"}


def test_sigterm_stops_the_childs_token_from_a_thread_started_then(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    with Scope(grace=30) as scope:
        worker = scope.process(sigterm_then_token, str(ready))
        wait_for_file(ready)
        assert worker.pid is not None
        os.kill(worker.pid, signal.SIGTERM)  # ours, alive: it waits in its loop
        scope.join(60)
    report = worker.result
    assert "quiesce-signal-work" not in report["before"]  # no helper until needed
    assert "quiesce-lifeline" in report["before"]
    assert "quiesce-signal-work" in report["after"]
    assert report["woke"] is True
    assert report["reason"] == "SIGTERM"


def test_sigterm_stops_the_childs_token_even_if_no_thread_can_start(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    # spawn: a forked child could reuse a stack cached from the test process's ended
    # threads, and start a thread in spite of the limit
    with Scope(grace=30, mp_context="spawn") as scope:
        worker = scope.process(sigterm_without_threads, str(ready))
        wait_for_file(ready)
        assert worker.pid is not None
        os.kill(worker.pid, signal.SIGTERM)
        scope.join(60)
    report = worker.result
    assert report["thread_started"] is False  # the limit took: the lifeline did the work
    assert report["woke"] is True
    assert report["reason"] == "SIGTERM"


@pytest.mark.skipif("forkserver" not in METHODS, reason="needs the forkserver start method")
def test_the_lifeline_ends_a_child_whose_owner_died_when_nothing_else_can(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    owner = subprocess.Popen([sys.executable, str(PROGRAMS / "lifeline_owner.py"), str(ready)],
                             stdout=subprocess.PIPE, text=True)
    assert owner.stdout is not None
    line = owner.stdout.readline().split()
    assert line[:1] == ["ready"], line
    helper, child = int(line[1]), int(line[2])
    fork_server = int(stat_fields(child)[1])  # the child's parent
    try:
        owner.kill()
        owner.wait(10)
        wait_for(lambda: state(child) in ("", "Z"), "the child's end by its lifeline", 10)
        assert state(fork_server) not in ("", "Z")  # its parent lives on: no PDEATHSIG did it
    finally:
        os.kill(helper, signal.SIGKILL)  # ours (the owner's fork); then the fork server ends
        wait_for(lambda: state(helper) in ("", "Z"), "the helper's end")
        wait_for(lambda: state(fork_server) in ("", "Z"), "the fork server's end")


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.skipif("fork" not in METHODS, reason="needs the fork start method")
def test_a_fork_child_reaped_by_another_threads_process_start_still_gets_its_status() -> None:
    # Every Process.start() polls every child (multiprocessing's _cleanup): its waitpid
    # can win the race with the worker's own, which then sees ECHILD and no status yet.
    ctx = multiprocessing.get_context("fork")
    done = threading.Event()

    def churn() -> None:
        while not done.is_set():
            p = ctx.Process(target=nothing)  # type: ignore[attr-defined]
            p.start()
            p.join()

    churners = [threading.Thread(target=churn) for _ in range(2)]
    for t in churners:
        t.start()
    try:
        for round_ in range(60):
            with Scope(mp_context="fork") as scope:
                workers = [scope.process(one) for _ in range(4)]
                assert scope.join(20), f"round {round_}: a worker never ended"
            assert [w.exitcode for w in workers] == [0, 0, 0, 0], f"round {round_}"
            assert [w.result for w in workers] == [1, 1, 1, 1]
    finally:
        done.set()
        for t in churners:
            t.join()
