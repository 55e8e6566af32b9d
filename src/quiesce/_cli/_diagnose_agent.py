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

Multiprocessing children are named by what the program made them (process
name, target, start method), not by their command line: a forked child
shows the agent's own. A forked child also gets, through an at-fork hook,
a ``faulthandler`` registration on ``STACK_SIGNAL`` (a real-time signal
programs rarely use) that writes all its threads' stacks into a pipe the
agent reads; the report asks each such child for its stack. Children made
by ``spawn`` or ``forkserver`` start a fresh interpreter the hook cannot
reach: their stack is not shown. Rejected: a temporary file per child (left
behind when the program is killed); ``py-spy``-style memory reading (needs
ptrace rights and a dependency).
"""

from __future__ import annotations

import os
import runpy
import signal
import sys
import threading
import time
import traceback
from typing import Any

STACK_SIGNAL = getattr(signal, "SIGRTMIN", signal.SIGUSR2) + 7
_stacks: tuple[int, int] | None = None  # the stack pipe: (read end, write end)
_stack_lock = threading.Lock()


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
    mp = {proc.pid: proc for proc in multiprocessing_children()}
    lines.append(f"  child processes: {len(children)}")
    for pid, cmdline in children:
        proc = mp.get(pid)
        if proc is None:
            lines.append(f"    PID {pid}: {cmdline}")
            continue
        lines.append(f"    PID {pid}: multiprocessing child {describe_process(proc)}")
        stack = child_stack(pid) if getattr(proc, "_start_method", None) == "fork" else []
        if stack:
            lines.append("      its Python stack:")
            lines.extend(f"        {line}" for line in stack)
        else:
            lines.append("      (its stack is not available: only forked children answer)")
    pools = describe_pools()
    lines.append(f"  quiesce pools with running tasks: {len(pools)}")
    lines.extend(f"    {line}" for line in pools)
    lines.append(f"quiesce doctor: end of report (next in {every:g} s if still running)")
    return "\n".join(lines)


def multiprocessing_children() -> list[Any]:
    """The program's live ``multiprocessing.Process`` objects (none if it never imported it)."""
    process = sys.modules.get("multiprocessing.process")
    children = getattr(process, "_children", None) if process is not None else None
    return [proc for proc in list(children or ()) if getattr(proc, "pid", None)]


def describe_process(proc: Any) -> str:
    """``'name', target module.function, start method fork``."""
    what = getattr(proc, "_quiesce_doctor_target", None)
    if what is None:
        what = f"run() of {type(proc).__module__}.{type(proc).__qualname__}"
    method = getattr(proc, "_start_method", None) or "?"
    return f"{proc.name!r}, {what}, start method {method}"


def child_stack(pid: int, timeout: float = 1.0) -> list[str]:
    """Ask a forked child for its threads' stacks (see the module's note); [] if it cannot.

    Only for children forked after the agent started: to any other process
    STACK_SIGNAL, at its default, is deadly.
    """
    if _stacks is None:
        return []
    read_end = _stacks[0]
    with _stack_lock:
        _drain(read_end)
        try:
            os.kill(pid, STACK_SIGNAL)
        except OSError:
            return []
        data, deadline, quiet_since = b"", time.monotonic() + timeout, None
        while time.monotonic() < deadline:
            chunk = _drain(read_end)
            now = time.monotonic()
            if chunk:
                data, quiet_since = data + chunk, now
            elif data and quiet_since is not None and now - quiet_since > 0.05:
                break
            time.sleep(0.01)
    return data.decode(errors="replace").strip().splitlines()


def _drain(fd: int) -> bytes:
    data = b""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            return data
        if not chunk:
            return data
        data += chunk


def _answer_stack_requests() -> None:
    """In a forked child: dump every thread's stack into the pipe on STACK_SIGNAL."""
    if _stacks is None:
        return
    try:
        import faulthandler

        faulthandler.register(STACK_SIGNAL, file=_stacks[1], all_threads=True, chain=False)
    except (ImportError, OSError, ValueError, RuntimeError):
        pass


def _name_targets() -> None:
    """``Process.start`` forgets the target (``del self._target``): note its name first."""
    import multiprocessing.process

    original = multiprocessing.process.BaseProcess.start

    def start(self: Any) -> None:
        target = getattr(self, "_target", None)
        if target is not None:
            self._quiesce_doctor_target = (
                f"target {getattr(target, '__module__', '?')}."
                f"{getattr(target, '__qualname__', repr(target))}")
        original(self)

    multiprocessing.process.BaseProcess.start = start  # type: ignore[method-assign]


def _prepare_stack_pipe() -> None:
    global _stacks
    try:
        read_end, write_end = os.pipe()
    except OSError:
        return
    os.set_blocking(read_end, False)
    os.set_blocking(write_end, False)  # a full pipe loses a dump, never blocks a child
    _stacks = (read_end, write_end)
    os.register_at_fork(after_in_child=_answer_stack_requests)


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
    _prepare_stack_pipe()
    _name_targets()
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
