"""A program whose main code ends but whose process does not.

argv: MODE, one of thread, child, pool, quiesce-pool, fork-child, scope-child.
"""

import concurrent.futures
import multiprocessing
import sys
import threading
import time


def poll_forever() -> None:
    while True:
        time.sleep(0.05)


if __name__ == "__main__":
    if sys.argv[1] == "thread":
        threading.Thread(target=poll_forever, name="stuck-poller").start()
    elif sys.argv[1] == "quiesce-pool":
        import quiesce  # its pools are stopped at exit: with a 30 s grace, exit waits

        quiesce.ThreadPool(1, grace=30).submit(poll_forever)
    elif sys.argv[1] == "pool":
        concurrent.futures.ThreadPoolExecutor(1).submit(poll_forever)
    elif sys.argv[1] == "scope-child":
        import quiesce  # the open scope is stopped at exit: with a 30 s grace, exit waits

        scope = quiesce.Scope(grace=30, mp_context="fork")
        scope.__enter__()
        scope.process(poll_forever)
    elif sys.argv[1] == "fork-child":
        multiprocessing.get_context("fork").Process(target=poll_forever,
                                                    name="stuck-worker").start()
    else:
        multiprocessing.get_context("spawn").Process(target=poll_forever).start()
    print("main returns", flush=True)
