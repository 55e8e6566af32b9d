"""The main thread waits on a pool future while SIGTERM lands on another thread.

Python runs handlers only in the main thread: the wait must come back to
run them (in slices), so ``handle_signals`` stops the root token, which
stops the pool made under it. Prints the future's ending.
"""

import os
import signal
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import quiesce

from pool_tasks import slow


def signal_from_a_helper_thread() -> None:
    time.sleep(0.3)
    signal.pthread_kill(threading.get_ident(), signal.SIGTERM)  # to this thread only


if __name__ == "__main__":
    with quiesce.handle_signals():
        pool = quiesce.ThreadPool(1, grace=0.2)
        future = pool.submit(slow, 30)
        threading.Thread(target=signal_from_a_helper_thread, daemon=True).start()
        started = time.monotonic()
        try:
            future.result(timeout=20)
        except BaseException as exc:
            print(type(exc).__name__, f"{time.monotonic() - started:.2f}", flush=True)
        pool.stop()
