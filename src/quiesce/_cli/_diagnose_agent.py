"""Runs inside the program ``quiesce doctor`` examines.

Run as a file (``python .../_diagnose_agent.py --after S --every S
(-m MODULE | SCRIPT) [ARG...]``) and stdlib-only like the guardian, so it
works with any interpreter, even one that cannot import quiesce. The program
runs as ``__main__`` (runpy), exactly as ``python SCRIPT`` would run it.
When its main code has returned (or raised), a daemon thread waits
``--after`` seconds; if the process still runs — the interpreter is
joining a non-daemon thread, or multiprocessing its children — it prints
what keeps it alive to stderr, and again every ``--every`` seconds. Being a
daemon thread, it never keeps the process alive itself.
"""

from __future__ import annotations

import os
import runpy
import sys
import threading
import time
import traceback


def describe_pools() -> list[str]:
    """Running tasks of quiesce pools, if the program imported quiesce."""
    describers = sys.modules.get("quiesce._core._describers")
    return [] if describers is None else list(describers.describe_all())


def report(since: float, every: float) -> str:
    lines = [f"quiesce doctor: the main code of process {os.getpid()} ended "
             f"{time.monotonic() - since:.1f} s ago, but the process still runs. "
             "What keeps it alive:"]
    frames = sys._current_frames()
    threads = [t for t in threading.enumerate()
               if t.is_alive() and not t.daemon and t is not threading.main_thread()]
    lines.append(f"  non-daemon threads: {len(threads)}")
    for thread in threads:
        lines.append(f"    thread {thread.name!r} (ident {thread.ident}):")
        frame = frames.get(thread.ident or -1)
        if frame is not None:
            for entry in traceback.format_stack(frame):
                lines.extend("      " + line.strip() for line in entry.rstrip().splitlines())
    children = child_processes()
    lines.append(f"  child processes: {len(children)}")
    lines.extend(f"    PID {pid}: {cmdline}" for pid, cmdline in children)
    pools = describe_pools()
    lines.append(f"  quiesce pools with running tasks: {len(pools)}")
    lines.extend(f"    {line}" for line in pools)
    lines.append(f"quiesce doctor: end of report (next in {every:g} s if still running)")
    return "\n".join(lines)


def child_processes() -> list[tuple[int, str]]:
    """Our direct children and their command lines (psutil, else /proc)."""
    try:
        import psutil
    except ImportError:
        return _children_from_proc()
    found = []
    for child in psutil.Process().children():
        try:
            found.append((child.pid, " ".join(child.cmdline()) or child.name()))
        except psutil.Error:
            continue
    return found


def _children_from_proc() -> list[tuple[int, str]]:
    me, found = os.getpid(), []
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else []:
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
            if int(stat[stat.rfind(b")") + 2:].split()[1]) != me:
                continue
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                found.append((int(entry), f.read().replace(b"\0", b" ").decode().strip()))
        except (OSError, ValueError, IndexError):
            continue
    return found


def _watch(after: float, every: float, since: float) -> None:
    time.sleep(after)
    while True:
        print(report(since, every), file=sys.stderr, flush=True)
        time.sleep(every)


def _arm(after: float, every: float) -> None:
    since = time.monotonic()
    threading.Thread(target=_watch, args=(after, every, since), daemon=True,
                     name="quiesce-doctor").start()


def main(argv: list[str]) -> None:
    after, every = float(argv[2]), float(argv[4])  # --after S --every S, set by the doctor
    target = argv[5:]
    try:
        if target[0] == "-m":
            sys.argv = [target[1], *target[2:]]
            sys.path[0] = os.getcwd()  # as `python -m` has it
            runpy.run_module(target[1], run_name="__main__", alter_sys=True)
        else:
            sys.argv = list(target)
            sys.path[0] = os.path.dirname(os.path.abspath(target[0]))
            runpy.run_path(target[0], run_name="__main__")
    finally:
        _arm(after, every)


if __name__ == "__main__":
    main(sys.argv)
