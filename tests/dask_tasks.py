"""Tasks the dask tests run on the cluster's workers, and helpers around them.

The workers import this module (their sys.path is the test process's), so the
tasks are pickled by reference, as in real use. Tasks talk to the test through
files in the test's tmp_path: a task writes ``started`` (the handshake) and,
when it ends, what it saw, with ``time.monotonic()`` stamps (CLOCK_MONOTONIC is
machine-wide on Linux, so the test can compare them with its own).
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import quiesce
from quiesce._core._context import root_token


def note(path: str, text: str) -> None:
    tmp = f"{path}.tmp{os.getpid()}.{threading.get_ident()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)  # the reader never sees a half-written file


def wait_for_file(path: Path, limit: float = 30.0) -> str:
    deadline = time.monotonic() + limit
    while not path.exists():
        if time.monotonic() > deadline:
            raise AssertionError(f"{path.name} never appeared within {limit} s")
        time.sleep(0.005)
    return path.read_text()


def token_facts() -> tuple[bool, bool, str, int]:
    token = quiesce.current_token()
    return token is root_token(), token.stopped, repr(token), id(token)


def wait_on_token(folder: str, limit: float = 60.0) -> str | None:
    """Handshake, then block on the task's token; write when it woke."""
    token = quiesce.current_token()
    note(f"{folder}/started", str(os.getpid()))
    woke = token.wait(limit)
    note(f"{folder}/woke", f"{time.monotonic()!r} {woke} {token.reason}")
    return token.reason


def wait_on_token_param(folder: str, token: quiesce.StopToken) -> str | None:
    """The Executor passes ``token=`` to a target that declares it."""
    note(f"{folder}/started", str(os.getpid()))
    same = token is quiesce.current_token()
    woke = token.wait(60)
    note(f"{folder}/woke", f"{time.monotonic()!r} {woke} {same}")
    return token.reason


def ignore_stop(folder: str) -> None:
    """A Python loop that never looks at its token; its finally reports Stopped."""
    outcome = "returned"
    try:
        note(f"{folder}/started", str(os.getpid()))  # inside the try: the finally will run
        while True:
            time.sleep(0.01)
    except quiesce.Stopped as exc:
        outcome = f"Stopped {exc}"
        raise
    finally:
        note(f"{folder}/finally", f"{time.monotonic()!r} {outcome}")


def stuck_in_c(folder: str) -> None:
    """Starts a plain subprocess, then blocks in C, out of reach of Stopped."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(100)"])
    note(f"{folder}/child", str(child.pid))
    note(f"{folder}/started", str(os.getpid()))
    select.select([], [], [], 100)


def sleep_forever() -> None:
    time.sleep(100)


def scope_in_task(folder: str) -> None:
    """A scope with a process, a subprocess and a thread; join until the task's cancel."""
    with quiesce.Scope(grace=0.3, kill_after=1.0) as scope:
        proc = scope.process(sleep_forever)
        popen = scope.popen(["sleep", "100"])
        scope.thread(quiesce.sleep, 100)
        deadline = time.monotonic() + 30
        while proc.alive and getattr(proc, "pid", None) is None and time.monotonic() < deadline:
            time.sleep(0.01)
        note(f"{folder}/pids", f"{proc.pid} {popen.popen.pid}")  # type: ignore[attr-defined]
        note(f"{folder}/started", str(os.getpid()))
        try:
            scope.join()
        finally:
            note(f"{folder}/finally", str(time.monotonic()))


def pool_in_task(folder: str) -> None:
    """A ProcessPool whose task blocks; the dask task's cancel must end both."""
    with quiesce.ProcessPool(1, grace=0.3, kill_after=1.0) as pool:
        future = pool.submit(os.getpid)
        note(f"{folder}/pids", str(future.result(timeout=30)))
        future = pool.submit(sleep_forever)
        note(f"{folder}/started", str(os.getpid()))
        try:
            future.result()
        finally:
            note(f"{folder}/finally", str(time.monotonic()))


def napping(seconds: float) -> float:
    quiesce.sleep(seconds)
    return seconds


def add(a: int, b: int) -> int:
    return a + b


def poll_token(token: Any, folder: str, tag: str) -> str | None:
    """Spin on a DistributedToken's ``stopped`` (a memory read) until it stops."""
    note(f"{folder}/started-{tag}", str(os.getpid()))
    deadline = time.monotonic() + 60
    while not token.stopped:
        if time.monotonic() > deadline:
            return "never stopped"
        time.sleep(0.001)
    note(f"{folder}/woke-{tag}", repr(time.monotonic()))
    return str(token.reason)


def stop_distributed(token: Any, reason: str) -> bool:
    token.stop(reason)
    return bool(token.stopped)
