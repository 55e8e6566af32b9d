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

``_exit_agent.py`` (``quiesce run --exit-with-main``) loads this file by
path and reuses ``run_program``, ``exit_like_python`` and ``report``, so
both print the same report and end main the same way. Main's outcome is
caught rather than left to propagate: the traceback Python prints would
otherwise begin with the agent's frames, and the agents need
main's exit status before the interpreter starts shutting down. A script
runs in a fresh ``__main__`` module left in ``sys.modules``, as Python runs
it; rejected: ``runpy.run_path``, whose temporary module leaves the
program's globals to the garbage collector at exit (a file left open was
then not always flushed); it still runs directories and zip files.
"""

from __future__ import annotations

import builtins
import io
import os
import runpy
import signal
import sys
import threading
import time
import traceback
import types
from collections.abc import Iterable
from typing import Any

_HERE = os.path.dirname(os.path.abspath(__file__))

STACK_SIGNAL = getattr(signal, "SIGRTMIN", signal.SIGUSR2) + 7
_stacks: tuple[int, int] | None = None  # the stack pipe: (read end, write end)
_stack_lock = threading.Lock()


def run_program(target: list[str]) -> BaseException | None:
    """Run ``SCRIPT [ARG...]`` or ``-m MODULE [ARG...]`` as ``__main__``; what it raised.

    As the interpreter does, the program runs in a fresh ``__main__`` module
    that stays in ``sys.modules`` after it ends (runpy.run_path's temporary
    module would leave its globals to the garbage collector, so a file the
    program left open might never be flushed at exit).
    """
    _prepare_stack_pipe()
    _name_targets()
    module = types.ModuleType("__main__")
    module.__dict__["__builtins__"] = builtins
    if target[0] == "-m":
        sys.argv = [target[1], *target[2:]]  # runpy puts the module's path in argv[0]
        program_dir = os.getcwd()  # as `python -m` has it
    else:
        sys.argv = list(target)
        program_dir = os.path.dirname(os.path.abspath(target[0]))
    if not getattr(sys.flags, "safe_path", False):  # -P / -I: Python adds no directory
        sys.path[0] = program_dir  # the agent's own directory, put there by Python
    sys.modules["__main__"] = module
    try:
        if target[0] == "-m":
            runpy._run_module_as_main(target[1])  # type: ignore[attr-defined]  # python -m's own
        else:
            _run_script(target[0], module)
    except BaseException as exc:  # main's outcome, whatever it is
        return exc
    return None


def _run_script(path: str, module: types.ModuleType) -> None:
    if not os.path.exists(path):
        print(f"{sys.executable}: can't open file {os.path.abspath(path)!r}: "
              "[Errno 2] No such file or directory", file=sys.stderr)
        raise SystemExit(2)  # as Python says it
    source = b"\0"
    if os.path.isfile(path):
        with io.open_code(path) as f:
            source = f.read()
    if b"\0" in source:  # a directory, a zip file or bytecode: runpy knows them
        runpy.run_path(path, run_name="__main__")
        return
    path = os.path.abspath(path)  # as Python 3.9+ reports a script's path
    module.__dict__.update(__file__=path, __cached__=None)
    exec(compile(source, path, "exec", dont_inherit=True), module.__dict__)


def main_status(error: BaseException | None) -> int:
    """The exit status Python gives a program whose main code ended with ``error``."""
    if error is None:
        return 0
    if isinstance(error, SystemExit):
        if error.code is None:
            return 0
        return error.code & 0xFF if isinstance(error.code, int) else 1
    if isinstance(error, KeyboardInterrupt):
        return 128 + signal.SIGINT  # Python re-raises SIGINT on itself at the very end
    return 1


def exit_like_python(error: BaseException | None) -> None:
    """End the agent's main code as the program's would have: return, or raise SystemExit.

    An uncaught exception gets its traceback printed through ``sys.excepthook``
    (what Python does), without the agent's frames.
    """
    if error is None:
        return
    if isinstance(error, SystemExit):
        raise error  # Python prints a non-integer code and exits, as it would have
    tb = error.__traceback__
    while tb is not None and _is_ours(tb.tb_frame.f_code.co_filename):
        tb = tb.tb_next
    sys.excepthook(type(error), error.with_traceback(tb), tb)
    raise SystemExit(main_status(error))


def _is_ours(filename: str) -> bool:
    """The agents' frames; runpy's stay, as in ``python -m``'s own tracebacks."""
    return os.path.dirname(os.path.abspath(filename)) == _HERE


def live_threads() -> list[threading.Thread]:
    """The threads that keep the interpreter from exiting: live, non-daemon, not main."""
    return [t for t in threading.enumerate()
            if t.is_alive() and not t.daemon and t is not threading.main_thread()]


def describe_pools() -> list[str]:
    """Running tasks of quiesce pools, if the program imported quiesce."""
    describers = sys.modules.get("quiesce._core._describers")
    return [] if describers is None else list(describers.describe_all())


def report(headline: str, threads: list[threading.Thread], pids: Iterable[int],
           closing: str | None = None) -> str:
    """The report both agents print: threads with their stacks, processes, pools."""
    lines = [headline]
    frames = sys._current_frames()
    lines.append(f"  non-daemon threads: {len(threads)}")
    for thread in threads:
        lines.append(f"    thread {thread.name!r} (ident {thread.ident}):")
        frame = frames.get(thread.ident or -1)
        if frame is not None:
            stack = traceback.extract_stack(frame)
            while len(stack) > 1 and stack[0].filename == threading.__file__:
                del stack[0]  # the thread's bootstrap: the same in every report
            for entry in traceback.format_list(stack):
                lines.extend("      " + line.strip() for line in entry.rstrip().splitlines())
    pids = list(pids)
    mp = {proc.pid: proc for proc in multiprocessing_children()}
    lines.append(f"  child processes: {len(pids)}")
    for pid in pids:
        proc = mp.get(pid)
        if proc is None:
            lines.append(f"    PID {pid}: {_cmdline(pid)}")
            continue
        lines.append(f"    PID {pid}: multiprocessing child {describe_process(proc)}")
        its = child_stack(pid) if start_method(proc) == "fork" else []
        if its:
            lines.append("      its Python stack:")
            lines.extend(f"        {line}" for line in its)
        else:
            lines.append("      (its stack is not available: only forked children answer)")
    pools = describe_pools()
    lines.append(f"  quiesce pools with running tasks: {len(pools)}")
    lines.extend(f"    {line}" for line in pools)
    if closing is not None:
        lines.append(closing)
    return "\n".join(lines)


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        pass
    try:
        import psutil

        process = psutil.Process(pid)
        return " ".join(process.cmdline()) or process.name()
    except Exception:  # no psutil, or the process is gone
        return "?"


def multiprocessing_children() -> list[Any]:
    """The program's live ``multiprocessing.Process`` objects (none if it never imported it):
    multiprocessing's list, and the processes quiesce took off it (its scopes' and pools'
    workers, which only quiesce polls: see ``_proc/_handle._unlist``)."""
    found: list[Any] = []
    for module, name in (("multiprocessing.process", "_children"),
                         ("quiesce._proc._handle", "unlisted")):
        holder = sys.modules.get(module)
        found.extend(getattr(holder, name, None) or ())
    return [proc for proc in found if getattr(proc, "pid", None)]


def describe_process(proc: Any) -> str:
    """``'name', target module.function, start method fork``."""
    what = getattr(proc, "_quiesce_doctor_target", None)
    if what is None:
        what = f"run() of {type(proc).__module__}.{type(proc).__qualname__}"
    method = start_method(proc) or "?"
    return f"{proc.name!r}, {what}, start method {method}"


def start_method(proc: Any) -> str | None:
    """How ``proc`` was started; a plain ``multiprocessing.Process`` says it by its Popen."""
    return (getattr(proc, "_start_method", None)
            or getattr(getattr(proc, "_popen", None), "method", None))


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


def child_processes() -> list[int]:
    """Our direct children (psutil, else /proc)."""
    try:
        import psutil
    except ImportError:
        return _children_from_proc()
    return [child.pid for child in psutil.Process().children()]


def _children_from_proc() -> list[int]:
    me, found = os.getpid(), []
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else []:
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
            if int(stat[stat.rfind(b")") + 2:].split()[1]) == me:
                found.append(int(entry))
        except (OSError, ValueError, IndexError):
            continue
    return found


def _watch(after: float, every: float, since: float) -> None:
    time.sleep(after)
    while True:
        headline = (f"quiesce doctor: the main code of process {os.getpid()} ended "
                    f"{time.monotonic() - since:.1f} s ago, but the process still runs. "
                    "What keeps it alive:")
        closing = f"quiesce doctor: end of report (next in {every:g} s if still running)"
        print(report(headline, live_threads(), child_processes(), closing),
              file=sys.stderr, flush=True)
        time.sleep(every)


def main(argv: list[str]) -> None:
    after, every = float(argv[2]), float(argv[4])  # --after S --every S, set by the doctor
    error = run_program(argv[5:])
    threading.Thread(target=_watch, args=(after, every, time.monotonic()), daemon=True,
                     name="quiesce-doctor").start()
    exit_like_python(error)


if __name__ == "__main__":
    main(sys.argv)
