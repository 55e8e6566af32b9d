"""The asyncio variant of the demo: the stuck job without and with quiesce.aio.

1. ``stuck_asyncio_plain.py`` (asyncio.run, a child process, executor
   threads): still running 3 s after its main() returned.
2. ``stuck_asyncio_quiesce.py`` (quiesce.aio.run and an async Scope): the
   job exits within grace + a fraction of a second, ``finally`` included.
"""

import sys

from demo import run


def main() -> int:
    elapsed, ended = run("stuck_asyncio_plain.py", patience=3.0)
    verdict = "ended" if ended else "STILL RUNNING, hung (demo killed it)"
    print(f"plain asyncio job:   {verdict} after {elapsed:.2f} s\n", flush=True)
    elapsed, ended = run("stuck_asyncio_quiesce.py", patience=30.0)
    verdict = "ended" if ended else "STILL RUNNING"
    print(f"quiesce.aio job:     {verdict} after {elapsed:.2f} s", flush=True)
    return 0 if ended else 1


if __name__ == "__main__":
    sys.exit(main())
