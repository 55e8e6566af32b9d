"""The first fds a fork-started scope hands its workers (tokens passed as arguments).

Each token's fds reach the child through multiprocessing's resource sharer,
whose thread imports ``hmac`` on its first connection, while the owner's
main thread forks the next worker. A child forked in that instant inherited
hmac's import lock, held for ever, and hung in its own ``import hmac``
(about one run in two, before quiesce imported hmac before forking).
Prints "ok" once all eight workers returned.
"""

from __future__ import annotations

import sys

import quiesce


def wait_token(ready: quiesce.StopToken, token: quiesce.StopToken) -> None:
    ready.stop()
    token.wait()


def main() -> int:
    if "hmac" in sys.modules:
        print("hmac imported already: nothing to test", flush=True)
        return 1
    readies = [quiesce.StopToken() for _ in range(8)]
    with quiesce.Scope(grace=5, kill_after=1, mp_context="fork") as scope:
        for ready in readies:
            scope.process(wait_token, ready)
        for ready in readies:
            if not ready.wait(20):
                print("a worker never started its target", flush=True)
                return 1
    print("ok", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
