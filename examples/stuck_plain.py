"""The seed problem, written the usual way: this job never ends.

A child process and a non-daemon thread loop forever. ``main`` returns, but
the interpreter joins both at exit, so the job hangs; SIGTERM kills it on
the spot without running any ``finally``, and the child lives on as an
orphan.
"""

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
    print("plain: main() returns now", flush=True)
