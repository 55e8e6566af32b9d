"""The seed's stuck job, as usually written: a non-daemon thread that loops for ever.

No quiesce import: ``quiesce run --exit-with-main`` must end it as it is.
"""

import threading
import time

stop = False


def work():
    while not stop:
        time.sleep(10)


if __name__ == "__main__":
    threading.Thread(target=work, name="poller").start()
    print("main returns", flush=True)
