"""Module-level pool tasks (process workers import them by name)."""

from __future__ import annotations

import ctypes
import os
import signal
import time

import quiesce

kept_tokens: list[quiesce.StopToken] = []


def write_atomically(path: str, text: str) -> None:
    """Readers polling for ``path`` never see it empty."""
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.replace(path + ".tmp", path)


def add(a: int, b: int = 0) -> int:
    return a + b


def pid_of_worker() -> int:
    return os.getpid()


def fail(message: str) -> None:
    raise ValueError(message)


def mark_ready(ready: str) -> None:
    """Tell a waiting test the task reached the point it needs (``ready``: a path, or '')."""
    if ready:
        write_atomically(ready, str(os.getpid()))


def wait_for_stop(marker: str, ready: str = "", *, token: quiesce.StopToken) -> str:
    """Cooperative: sleeps on its token, records why it woke."""
    mark_ready(ready)
    woke = token.wait(60)
    if marker != os.devnull:
        write_atomically(marker, f"{woke} {token.reason}")
    return "woke"


def ignore_token(marker: str, ready: str = "") -> None:
    """Ignores its token; only SIGTERM (raised as Stopped) ends it, through finally."""
    try:
        mark_ready(ready)
        while True:
            time.sleep(0.01)
    finally:
        write_atomically(marker, "finally ran")


def ignore_everything(ready: str = "") -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    mark_ready(ready)  # from now on only SIGKILL ends it
    while True:
        time.sleep(0.01)


def exit_hard(code: int) -> None:
    os._exit(code)


def kill_self() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def segfault() -> None:
    ctypes.string_at(0)


def slow(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def keep_token() -> int:
    token = quiesce.current_token()
    kept_tokens.append(token)
    return id(token)


def token_id() -> int:
    return id(quiesce.current_token())


def record_pid_and_block(directory: str) -> None:
    """Writes DIRECTORY/<worker PID>, then holds its worker until it is ended."""
    os.close(os.open(os.path.join(directory, str(os.getpid())), os.O_CREAT | os.O_WRONLY))
    time.sleep(3600)
