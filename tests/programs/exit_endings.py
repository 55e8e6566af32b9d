"""Main ends in several ways, leaving (or not) something stuck behind.

argv[1], how main ends: ``return``, ``raise``, ``exit3`` (sys.exit(3)),
``exit-text`` (sys.exit("bad config")), ``interrupt`` (KeyboardInterrupt); argv[2], what it leaves:
``nothing``, ``c-call`` (a thread in time.sleep(100)), ``tree`` (a
subprocess, a ``setsid`` escaper whose parent exited, and a multiprocessing
child that ignores SIGTERM and started a grandchild; their PIDs are printed
as ``pids A B C D``).
An atexit handler and an unflushed print show that both still happen; with
OUTPUT_FILE set, a file left open shows the interpreter finalized normally.
"""

import atexit
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time


def grandparent(queue):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # only SIGKILL ends it
    grandchild = subprocess.Popen(["sleep", "1000"])
    queue.put(grandchild.pid)
    while True:
        time.sleep(10)


def leave(what):
    if what == "c-call":
        threading.Thread(target=time.sleep, args=(100,), name="in-c-call").start()
    elif what == "tree":
        plain = subprocess.Popen(["sleep", "1000"])
        escaper = subprocess.run(  # setsid, and its parent exits: re-parented to the supervisor
            ["sh", "-c", "setsid sleep 1001 >/dev/null 2>&1 & echo $!"],
            capture_output=True, text=True, check=True).stdout.split()[0]
        queue = multiprocessing.Queue()
        child = multiprocessing.Process(target=grandparent, args=(queue,), name="grandparent")
        child.start()
        print("pids", plain.pid, escaper, child.pid, queue.get(timeout=30), flush=True)


if __name__ == "__main__":
    how, what = sys.argv[1], sys.argv[2]
    atexit.register(lambda: print("atexit ran", flush=True))
    leave(what)
    if "OUTPUT_FILE" in os.environ:  # left open: only the interpreter's finalization flushes it
        leaked = open(os.environ["OUTPUT_FILE"], "w")  # noqa: SIM115
        leaked.write("written at exit")
    print(f"main ends by {how}")  # not flushed: the exit must flush it
    if how == "raise":
        raise ValueError("boom")
    if how == "exit3":
        sys.exit(3)
    if how == "exit-text":
        sys.exit("bad config")
    if how == "interrupt":
        raise KeyboardInterrupt
