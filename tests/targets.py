"""Module-level worker targets for tests (spawn and forkserver children import them)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any

import quiesce


def wait_on_token(token: quiesce.StopToken, timeout: float = 60.0) -> str | None:
    """Block on the token; return its reason (proves the wake-up carried it)."""
    assert token.wait(timeout), "token never stopped"
    return token.reason


def stop_token(token: quiesce.StopToken, reason: str) -> None:
    token.stop(reason)


def report_wait(token: quiesce.StopToken, queue: Any) -> None:
    queue.put(("waiting", os.getpid()))
    started = time.monotonic()
    woke = token.wait(60)
    queue.put(("woke", woke, token.reason, time.monotonic() - started))


def mark_ready(ready: str) -> None:
    """Tell a waiting test this worker reached the point it needs (``ready``: a path, or '')."""
    if ready:
        with open(ready + ".tmp", "w") as f:
            f.write(str(os.getpid()))
        os.replace(ready + ".tmp", ready)  # appears whole


def loop_forever(ready: str = "") -> None:
    """The seed's problem 1/2: a loop that never looks at any stop flag."""
    mark_ready(ready)
    while True:
        time.sleep(0.01)


def ignore_sigterm_forever(ready: str = "") -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    mark_ready(ready)  # from now on only SIGKILL ends it
    while True:
        time.sleep(0.01)


def cooperative(marker: str, ready: str = "", *, token: quiesce.StopToken) -> str:
    """Sleeps on its token; writes ``marker`` in finally so tests see cleanup ran."""
    try:
        mark_ready(ready)
        token.wait(60)
        return "stopped politely"
    finally:
        with open(marker, "w") as f:
            f.write("cleaned up")


def finally_on_sigterm(marker: str, ready: str = "") -> None:
    """Ignores the token; only SIGTERM (raised as Stopped) gets it out, via finally."""
    try:
        mark_ready(ready)
        while True:
            time.sleep(0.01)
    finally:
        with open(marker, "w") as f:
            f.write("finally ran")


def quiesce_sleep_forever(ready: str = "") -> None:
    mark_ready(ready)
    quiesce.sleep(60)


def return_value(x: int) -> dict[str, int]:
    return {"x": x, "pid": os.getpid()}


def raise_value_error(message: str) -> None:
    raise ValueError(message)


def exit_hard(code: int) -> None:
    os._exit(code)


def current_reason() -> str | None:
    return quiesce.current_token().reason


def spawn_grandchildren(pidfile: str, setsid: bool = False) -> None:
    """Start a grandchild (optionally a setsid escaper), record its PID, then loop forever."""
    argv = [sys.executable, "-c", "import time\nwhile True: time.sleep(0.05)"]
    child = subprocess.Popen(argv, start_new_session=setsid)
    with open(pidfile, "w") as f:
        f.write(str(child.pid))
    loop_forever()


def start_thread_that_never_ends() -> None:
    threading.Thread(target=loop_forever, daemon=False).start()


def raise_after(delay: float, message: str) -> None:
    """Fails after ``delay`` seconds of a sleep that ignores every token."""
    time.sleep(delay)
    raise ValueError(message)


def spin_on_stopped(token: quiesce.StopToken, queue: Any) -> None:
    """Spin on the cheap ``stopped`` attribute only: no wait(), no syscall."""
    queue.put(("spinning", os.getpid()))
    deadline = time.monotonic() + 30
    while not token.stopped and time.monotonic() < deadline:
        pass
    queue.put(("saw", token.stopped))


def stop_when_told(token: quiesce.StopToken, go: Any) -> None:
    go.wait(30)
    token.stop("from the child")


def waits_for_own_callback(token: quiesce.StopToken) -> str:
    """Ends only once its on_stop callback ran: it never reads the token itself."""
    ran = threading.Event()
    token.on_stop(ran.set)
    while not ran.wait(0.05):
        pass
    return "callback ran"


def report_fd_readable(token: quiesce.StopToken, queue: Any) -> None:
    """Whether the token's fd turns readable within 10 s (a select-based waiter)."""
    import select

    queue.put(bool(select.select([token.fileno()], [], [], 10)[0]))
