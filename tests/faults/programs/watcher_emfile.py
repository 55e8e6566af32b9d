"""The token watcher under EMFILE: stops made in forked children still reach callbacks.

Run under ``prlimit --nofile=64``. Round 1 exhausts the fds first, then
forks a child that stops a token: the parent's watcher is created right
then, with no fd to spare. Round 2 frees the fds and does it again with a
new token (the watcher still serves). Round 3 exhausts the fds again with
the watcher running. Prints one JSON line: which rounds' callbacks fired.
"""

from __future__ import annotations

import json
import os
import threading

import quiesce


def exhaust() -> list[int]:
    held = []
    try:
        while True:
            held.append(os.open("/dev/null", os.O_RDONLY))
    except OSError:
        return held


def release(held: list[int]) -> None:
    for fd in held:
        os.close(fd)
    held.clear()


def stop_in_a_child(token: quiesce.StopToken) -> None:
    pid = os.fork()
    if pid == 0:
        token.stop("stopped in a forked child")
        os._exit(0)
    os.waitpid(pid, 0)


def round_(exhausted: bool) -> bool:
    token = quiesce.StopToken()
    fired = threading.Event()
    token.on_stop(fired.set)
    held = exhaust() if exhausted else []
    try:
        stop_in_a_child(token)
        return fired.wait(5.0)
    finally:
        release(held)


def main() -> None:
    results = [round_(True), round_(False), round_(True)]
    print(json.dumps({"fired": results}), flush=True)


if __name__ == "__main__":
    main()
