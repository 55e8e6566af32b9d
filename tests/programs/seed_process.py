"""The seed's stuck job, as usually written: a child process that loops for ever.

No quiesce import: ``quiesce run --exit-with-main`` must end it as it is.
"""

import multiprocessing
import time


def work():
    while True:
        time.sleep(10)


if __name__ == "__main__":
    child = multiprocessing.Process(target=work)
    child.start()
    print(f"child {child.pid}", flush=True)
    print("main returns", flush=True)
