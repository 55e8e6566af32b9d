"""A program whose main code ends but whose process does not: argv MODE (thread|child)."""

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
    else:
        multiprocessing.get_context("spawn").Process(target=poll_forever).start()
    print("main returns", flush=True)
