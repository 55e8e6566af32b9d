"""The seed problem, written the usual way: this job never ends.

A child process, a non-daemon thread and a pool task loop forever. ``main`` returns, but
the interpreter joins both at exit, so the job hangs; SIGTERM kills it on
the spot without running any ``finally``, and the child lives on as an
orphan.
"""

import concurrent.futures
import multiprocessing
import threading
import time

stop_flag = False


def crunch() -> None:
    while True:  # a child process that never looks at any stop request
        time.sleep(0.1)


def poll() -> None:
    while not stop_flag:  # the flag-and-sleep loop: notices a stop 10 s late
        time.sleep(10)


if __name__ == "__main__":
    multiprocessing.Process(target=crunch).start()
    threading.Thread(target=poll).start()
    concurrent.futures.ThreadPoolExecutor(1).submit(crunch)  # shutdown() would wait for ever
    print("plain: main() returns now", flush=True)
