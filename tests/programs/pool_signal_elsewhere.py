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
import types

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import quiesce

from pool_tasks import slow


def waits_in(thread: int, code: types.CodeType) -> bool:
    """Whether ``code`` is on the stack of ``thread`` now."""
    frame = sys._current_frames().get(thread)
    while frame is not None:
        if frame.f_code is code:
            return True
        frame = frame.f_back
    return False


def signal_from_a_helper_thread(main: int, code: types.CodeType) -> None:
    """SIGTERM to this thread once the main thread waits in ``code`` (the future's result)."""
    deadline = time.monotonic() + 20
    while not waits_in(main, code):
        if time.monotonic() > deadline:
            print("the main thread never waited on the future", flush=True)
            os._exit(3)
        time.sleep(0.005)
    signal.pthread_kill(threading.get_ident(), signal.SIGTERM)  # to this thread only


if __name__ == "__main__":
    with quiesce.handle_signals():
        pool = quiesce.ThreadPool(1, grace=0.2)
        future = pool.submit(slow, 30)
        threading.Thread(target=signal_from_a_helper_thread,
                         args=(threading.get_ident(), type(future).result.__code__),
                         daemon=True).start()
        started = time.monotonic()
        try:
            future.result(timeout=20)
        except BaseException as exc:
            print(type(exc).__name__, f"{time.monotonic() - started:.2f}", flush=True)
        pool.stop()
