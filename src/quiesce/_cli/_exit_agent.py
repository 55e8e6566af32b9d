"""Runs inside the program ``quiesce run --exit-with-main`` ends when its main code ends.

Run as a file, stdlib-only like the doctor's agent (whose runner and report
it loads by path and shares): ``python .../_exit_agent.py --grace G
--kill-after K --signal N (-m MODULE | SCRIPT) [ARG...]``. The program runs
unchanged as ``__main__``; when its main code has returned or raised:

1. at once, the root token of quiesce is stopped (if the program imported
   quiesce, its scopes, pools and workers stop cooperatively), and the agent
   lets the interpreter exit *as usual*: it joins non-daemon threads, runs
   ``atexit`` (multiprocessing joins its children), finalizes, flushes. A
   program that left nothing running exits at once, exactly as without us;
2. a daemon watchdog thread sleeps until GRACE. If the process still runs,
   it prints the doctor's report of what it has to end, raises ``Stopped``
   in every remaining non-daemon thread (``PyThreadState_SetAsyncExc``: it
   lands at the thread's next bytecode) and sends ``--signal`` (then
   SIGCONT) to every process of the job but this one;
3. at GRACE + kill_after: SIGKILL to every process of the job. If a
   non-daemon thread still runs (stuck in a C call), or the normal exit
   still has not happened shortly after, the watchdog runs the ``atexit``
   handlers (unless the interpreter already started them), flushes stdio
   and ``os._exit``s with main's status.

The job's processes: our descendants (``/proc`` parent links) and every
process whose ``QUIESCE_TAGS`` carries the supervisor's tag, the innermost
one in our environment, so ``setsid`` escapers re-parented to the supervisor
are found too. Each is pinned by a pidfd and the scan repeated before it is
signalled, so a recycled PID is never signalled. multiprocessing's resource
tracker and forkserver and quiesce's guardian are helpers that end when we
do: they are neither signalled nor reported (their children, such as the
forkserver's workers, whose command line is the forkserver's, are).

The threads a forced exit needs (one runs the ``atexit`` handlers, one
flushes stdio, each waited for a bounded time since either may block on
what the stuck thread holds) are started with the watchdog: once shutdown
has begun, Python 3.12+ refuses to start a thread.

Rejected: ``os._exit`` right after main (skips ``atexit``, the flushing of
files the program left open, and lets nothing stop cooperatively); calling
``threading._shutdown`` or editing its private lists to drop a stuck thread
(different in every Python version); reaping children here (multiprocessing
reaps its own, and would then signal a PID it believes unreaped; orphans go
to the supervisor, which reaps them); a ``Stopped`` raised at main's end
before GRACE (a program that uses quiesce must get its cooperative stop
first, as in every ladder of quiesce).
"""

from __future__ import annotations

import atexit
import errno
import importlib.util
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Collection
from types import ModuleType
from typing import TYPE_CHECKING, NoReturn

HELPERS = ("multiprocessing.resource_tracker", "multiprocessing.forkserver",
           "quiesce/_proc/_guardian.py")
SETTLE = 0.5  # after the last SIGKILL: time for the interpreter's own exit to finish
ATEXIT_LIMIT = 1.0  # a forced exit gives the atexit handlers this long
FLUSH_LIMIT = 0.5  # and the flushing of stdout and stderr this long
NAME = "quiesce run --exit-with-main"


def _load_shared() -> ModuleType:
    """The doctor's agent, loaded by path: quiesce itself may not be importable here."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_diagnose_agent.py")
    spec = importlib.util.spec_from_file_location("_quiesce_diagnose_agent", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


if TYPE_CHECKING:
    from quiesce._cli import _diagnose_agent as shared
else:
    shared = _load_shared()


class Stopped(BaseException):
    """Raised in a thread asked to stop, when the program did not import quiesce."""


def stopped_type() -> type[BaseException]:
    """``quiesce.Stopped`` if the program uses quiesce, else this agent's own ``Stopped``."""
    found = getattr(sys.modules.get("quiesce"), "Stopped", None)
    return found if isinstance(found, type) and issubclass(found, BaseException) else Stopped


def stop_root_token() -> bool:
    """Stop quiesce's root token, if the program imported quiesce; True if it did."""
    root_token = getattr(sys.modules.get("quiesce._core._context"), "root_token", None)
    if root_token is None:
        return False
    try:
        root_token().stop("the main code ended (quiesce run --exit-with-main)")
    except Exception as exc:  # an older or broken quiesce: say so, go on with the ladder
        _say(f"could not stop quiesce's root token: {exc!r}")
        return False
    return True


def interrupt(thread: threading.Thread, exc_type: type[BaseException]) -> bool:
    """Raise ``exc_type`` in ``thread`` at its next bytecode; False if impossible.

    ctypes is imported only now: the program runs with the modules it imports.
    """
    try:
        import ctypes

        set_async_exc = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.c_ulong, ctypes.py_object)(
            ("PyThreadState_SetAsyncExc", ctypes.pythonapi))
    except (ImportError, AttributeError, OSError):  # not CPython: threads cannot be interrupted
        return False
    return thread.ident is not None and int(set_async_exc(thread.ident, exc_type)) == 1


# -- the job's processes ------------------------------------------------------------------
def _stat(pid: int) -> tuple[int, str] | None:
    """(parent PID, state letter) from /proc, None if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        fields = stat[stat.rfind(b")") + 2:].split()
        return int(fields[1]), fields[0].decode()
    except (OSError, ValueError, IndexError):
        return None


def _tagged(pid: int, tag: str) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            environ = f.read()
    except OSError:
        return False
    for entry in environ.split(b"\0"):
        if entry.startswith(b"QUIESCE_TAGS="):
            return tag in entry[len(b"QUIESCE_TAGS="):].decode(errors="replace").split()
    return False


def _is_helper(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    return any(marker in cmdline for marker in HELPERS)


def job_processes(tag: str | None) -> set[int]:
    """Live processes of the job but this one: our descendants and the tagged ones."""
    me = os.getpid()
    if not os.path.isdir("/proc/self"):
        return _job_from_psutil()
    table = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (stat := _stat(int(entry))) is not None:
            table[int(entry)] = stat
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    ancestors, pid = set(), me
    while pid in table and pid not in ancestors and pid > 1:
        ancestors.add(pid)
        pid = table[pid][0]
    roots = [me]
    if tag is not None:
        roots += [pid for pid in table if pid not in ancestors and _tagged(pid, tag)]
    found: set[int] = set()
    while roots:
        pid = roots.pop()
        if pid not in found:
            found.add(pid)
            roots.extend(children.get(pid, ()))
    # A helper's forks (forkserver's workers) share its command line: only the topmost is one.
    return {pid for pid in found - ancestors - {me}
            if table[pid][1] not in "ZX"
            and not (_is_helper(pid) and not _is_helper(table[pid][0]))}


def _job_from_psutil() -> set[int]:
    try:
        import psutil

        return {child.pid for child in psutil.Process().children(recursive=True)
                if child.status() != psutil.STATUS_ZOMBIE}
    except Exception:  # no psutil: nothing we can find
        return set()


class Pinned:
    """One process of the job, held by a pidfd where the platform has them."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.fd: int | None = None
        if hasattr(os, "pidfd_open"):
            try:
                self.fd = os.pidfd_open(pid)
            except OSError as exc:
                if exc.errno == errno.ESRCH:
                    raise ProcessLookupError(pid) from None

    def send(self, sig: int) -> bool:
        try:
            if self.fd is not None:
                signal.pidfd_send_signal(self.fd, sig)
            else:
                os.kill(self.pid, sig)
        except (ProcessLookupError, PermissionError):
            return False
        return True

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def pin_job(tag: str | None, skip: Collection[int] = ()) -> list[Pinned]:
    """Pin the job's processes, then scan again: only those still in the job are kept."""
    pinned = []
    for pid in sorted(job_processes(tag) - set(skip)):
        try:
            pinned.append(Pinned(pid))
        except ProcessLookupError:
            continue
    confirmed = job_processes(tag)
    for ref in pinned:
        if ref.pid not in confirmed:
            ref.close()
    return [ref for ref in pinned if ref.pid in confirmed]


def kill_job(tag: str | None) -> int:
    """SIGKILL every process of the job, scanning again until no new one appears.

    Says which first: once they are gone the interpreter may exit at once.
    """
    killed: set[int] = set()
    for _ in range(100):  # a fork bomb outruns us: the supervisor's own ladder follows
        refs = pin_job(tag, skip=killed)
        if not refs:
            break
        _say(f"SIGKILL to PID(s) {', '.join(str(ref.pid) for ref in refs)}")
        for ref in refs:
            if ref.send(signal.SIGKILL):
                killed.add(ref.pid)
            ref.close()
    return len(killed)


# -- the ending -----------------------------------------------------------------------------
class Ending:
    """What happens after main's code ended: the cooperative stop, then the watchdog's ladder."""

    def __init__(self, *, grace: float, kill_after: float, stop_signal: int, status: int,
                 tag: str | None) -> None:
        self.grace, self.kill_after, self.status, self.tag = grace, kill_after, status, tag
        self.stop_signal = stop_signal  # 0: none (--signal 0), straight to SIGKILL
        self.since = time.monotonic()
        self._lock = threading.Lock()
        self._atexit_began = False  # the interpreter itself started the atexit handlers
        self._forcing = False
        self._atexit_runner: int | None = None  # the thread running them for a forced exit
        self._stopped: type[BaseException] = Stopped
        self._previous_hook = threading.excepthook

    def begin(self) -> None:
        """In the main thread, the moment main's code has ended."""
        # The hook first: the root token's stop can end a thread with Stopped at once.
        self._stopped = stopped_type()
        threading.excepthook = self._excepthook
        stop_root_token()
        self._atexit_helper = Helper(self._run_atexit, "quiesce-exit-with-main-atexit")
        self._flush_helper = Helper(_flush_stdio, "quiesce-exit-with-main-flush")
        atexit.register(self._on_atexit)  # registered last, so it runs first
        threading.Thread(target=self._watch, daemon=True, name="quiesce-exit-with-main").start()

    def _on_atexit(self) -> None:
        with self._lock:
            if not self._forcing:
                self._atexit_began = True
                return
            if self._atexit_runner == threading.get_ident():
                return
        threading.Event().wait()  # the watchdog runs the handlers, then os._exit: never twice

    def _excepthook(self, args: threading.ExceptHookArgs) -> None:
        """A thread ending with ``Stopped`` now ended cleanly (we asked it): nothing to print."""
        if issubclass(args.exc_type, self._stopped):
            return
        self._previous_hook(args)

    def _watch(self) -> None:
        try:
            self._ladder()
        except BaseException as exc:  # whatever failed, the process still ends in time
            _say(f"internal error ({exc!r}); exiting now")
        self._force_exit()

    def _ladder(self) -> None:
        _sleep_until(self.since + self.grace)
        threads = shared.live_threads()
        refs = pin_job(self.tag)
        pools = shared.describe_pools()
        if threads or refs or pools:
            # The stacks first: once Stopped lands they unwind. And the whole report out
            # before anything is ended: once the last thing that held the interpreter
            # ends, it exits, and this daemon thread dies wherever it was (the report
            # was lost that way when the stuck child died at once of its SIGTERM).
            text = shared.report(self._headline(), threads, [ref.pid for ref in refs])
            signals = (f"sending {signal.Signals(self.stop_signal).name} to {len(refs)} "
                       "process(es)" if self.stop_signal else "no signal sent")
            _say(f"{text}\n{NAME}: end of report (raising {self._stopped.__name__} in "
                 f"{len(threads)} thread(s), {signals}; SIGKILL and exit in "
                 f"{self.kill_after:g} s)", prefix=False)
            for thread in threads:
                interrupt(thread, self._stopped)
            for ref in refs:
                if self.stop_signal and ref.send(self.stop_signal) \
                        and self.stop_signal != signal.SIGKILL:
                    ref.send(signal.SIGCONT)  # a stopped process could not act on it
                ref.close()
        _sleep_until(self.since + self.grace + self.kill_after)
        killed = kill_job(self.tag)
        stuck = shared.live_threads()
        if stuck:
            names = ", ".join(repr(t.name) for t in stuck)
            _say(f"thread(s) {names} still running (blocked in a C call?): "
                 f"exiting with status {self.status} without them")
            return
        if killed:
            _sleep_until(time.monotonic() + SETTLE)  # the interpreter's own exit, if it can
        _say(f"the process did not exit by itself: exiting with status {self.status}")

    def _headline(self) -> str:
        return (f"{NAME}: the main code of process {os.getpid()} ended "
                f"{time.monotonic() - self.since:.1f} s ago, but the process still runs. "
                "Ending what keeps it alive:")

    def _force_exit(self) -> NoReturn:
        try:
            with self._lock:
                self._forcing = True
                run_handlers = not self._atexit_began  # else the interpreter runs them already
            if run_handlers:
                self._atexit_helper.run(ATEXIT_LIMIT)
            self._flush_helper.run(FLUSH_LIMIT)  # a thread stuck writing holds a stream's lock
        finally:
            os._exit(self.status)

    def _run_atexit(self) -> None:
        with self._lock:
            self._atexit_runner = threading.get_ident()
        atexit._run_exitfuncs()


class Helper:
    """A daemon thread started now that runs ``function`` later, for a bounded time.

    Started in advance: once the interpreter is shutting down, Python 3.12+
    refuses to start threads.
    """

    def __init__(self, function: Callable[[], object], name: str) -> None:
        self._function = function
        self._go = threading.Event()
        self._done = threading.Event()
        threading.Thread(target=self._main, daemon=True, name=name).start()

    def _main(self) -> None:
        self._go.wait()
        try:
            self._function()
        finally:
            self._done.set()

    def run(self, seconds: float) -> None:
        """Run the function in the helper thread; stop waiting for it after ``seconds``."""
        self._go.set()
        self._done.wait(seconds)


def _flush_stdio() -> None:
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        try:
            if stream is not None:
                stream.flush()
        except Exception:  # a closed or broken stream: nothing more to do
            pass


def _sleep_until(when: float) -> None:
    while (left := when - time.monotonic()) > 0:
        time.sleep(min(left, 3600.0))  # time.sleep refuses what a C timeout cannot hold


def _say(message: str, *, prefix: bool = True) -> None:
    try:
        print(f"{NAME}: {message}" if prefix else message, file=sys.stderr, flush=True)
    except Exception:  # a closed stderr changes nothing
        pass


def main(argv: list[str]) -> None:
    # --grace G --kill-after K --signal N, set by quiesce run; then the program
    grace, kill_after, stop_signal = float(argv[2]), float(argv[4]), int(argv[6])
    tags = os.environ.get("QUIESCE_TAGS", "").split()
    error = shared.run_program(argv[7:])
    status = shared.main_status(error)
    try:
        shared.exit_like_python(error)
    finally:
        Ending(grace=grace, kill_after=kill_after, stop_signal=stop_signal, status=status,
               tag=tags[-1] if tags else None).begin()


if __name__ == "__main__":
    main(sys.argv)
