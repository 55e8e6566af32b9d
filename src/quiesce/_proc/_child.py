"""What runs first inside every process a Scope starts, before the user's target.

In order, and why:
1. PR_SET_PDEATHSIG(SIGKILL), then check the parent is still the owner: the
   kernel kills us the instant the owner dies, even by SIGKILL; the check
   closes the race where it died before the prctl.
2. A process group of our own: the ladder can signal what we start without
   touching the owner, and a terminal's Ctrl-C reaches the owner only, which
   then stops us in order instead of every process at once.
3. The worker's tag in QUIESCE_TAGS: every process we exec carries it, so
   the owner finds even descendants that setsid or double-fork away.
4. The worker token becomes this process's root token and current token.
5. SIGTERM raises ``Stopped`` in the main thread (once): the ladder's second
   step runs ``finally`` and ``with`` blocks instead of dying on the spot.
   It also stops the token, from a helper thread (_deferred: no lock is
   taken in a handler) that the lifeline starts at the first SIGTERM.
6. A lifeline thread, the portable half of the orphan guarantee: when the
   owner ends (its sentinel closes, or getppid changes), it stops the token,
   kills our descendants and ends this process. On Linux the PDEATHSIG has
   usually done the job already.
7. (scope processes, not pool workers) A child subreaper: an orphan of one
   of our descendants re-parents to us, so it stays in our tree by
   ancestry even after ``setsid`` without exec. Not in pool workers: they
   live long and would collect the zombies of every adopted orphan.
8. After the target, before exiting: end what remains of our tree while
   we still anchor it (``end_descendants``).

A child that ends at its token thus has two threads besides the main one
(the lifeline and the token watcher, which makes a stop made by the owner
visible to ``token.stopped`` and ``quiesce.stopped()`` here), and imports
no more than it needs: no psutil (procfs is read directly), no inspect
(the owner tells whether the target takes ``token``), no traceback unless
the target failed. Each thread and each module costs at start-up and
again at the exit, when the kernel ends every thread and frees every page:
with eight children ending at once on two cores, that teardown was most
of a scope's exit.

Rejected: the lifeline as a watch of the token watcher's thread (one
thread fewer): the watcher runs user callbacks (a token's ``on_stop``), and
one that blocks would blind the lifeline; its thread costs ~0.03 ms at the
exit.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import pickle
import signal
import sys
import threading
import time
from types import FrameType
from typing import Any

from quiesce._core import _context, _deferred
from quiesce._core._errors import Stopped
from quiesce._core._token import StopToken
from quiesce._proc import _pickling, _platform, _proctree

LIFELINE_POLL = 0.05  # how often the lifeline compares getppid() without PDEATHSIG
# With PDEATHSIG a changed getppid() means the parent died, and the kernel has
# killed us already: the lifeline only waits on its fds, and looks seldom.
LIFELINE_POLL_PDEATHSIG = 1.0
_WALL = 0x40000000  # Linux's __WALL: wait for every kind of child (not in the os module)


class RemoteTraceback(Exception):
    """The traceback of an exception raised in a child process, as text."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return self.text


def child_main(payload: bytes, tokens: list[StopToken], pass_token: bool, token: StopToken,
               writer: multiprocessing.connection.Connection,
               tag: str, owner_pid: int, kill_after: float = 2.0) -> None:
    """Target of the multiprocessing.Process; the exit status tells how it ended.

    ``payload`` and ``tokens``: the target's call from ``_pickling.pickle_call``
    (its StopTokens came beside the bytes, the start method's way).
    ``pass_token``: whether the target gets ``token=`` (the owner asked
    ``_wants_token``, so this process never imports inspect).
    """
    terminated = prepare_child(token, tag, owner_pid)
    subreaper = _platform.set_child_subreaper()  # step 7: orphans of our descendants stay ours
    code = _run_target(payload, tokens, pass_token, token, writer, terminated)
    writer.close()
    end_descendants(tag, kill_after, subreaper=subreaper)
    sys.exit(code)


def end_descendants(tag: str, kill_after: float, *, subreaper: bool = False) -> None:
    """Step 8: before exiting, end what we started (SIGTERM, SIGKILL after ``kill_after``).

    As a child subreaper we still hold every descendant by ancestry, even one
    that called setsid and never exec'd (no tag in /proc/PID/environ); once we
    exit, it would re-parent to init, out of the owner's reach. So a
    subreaper with no child at all has no descendant either, and skips the
    scan of the whole process table (a few ms, paid by every worker at
    once when a scope stops). The owner still checks after our exit
    (_lineage: our ancestors' children lists, a full scan only if need be).
    """
    me = os.getpid()
    if subreaper and not _has_children():
        return
    try:
        if not _proctree.snapshot(root_pid=me, tag=tag, include_root=False):
            return
        _proctree.signal_tree(signal.SIGTERM, root_pid=me, tag=tag, include_root=False)
        deadline = time.monotonic() + kill_after
        while time.monotonic() < deadline:
            if not _proctree.snapshot(root_pid=me, tag=tag, include_root=False):
                return
            time.sleep(0.02)
    except Stopped:
        pass  # the owner's SIGTERM: its ladder has moved on, so do we
    try:
        stop_and_kill_descendants(me, tag)
    except Stopped:
        stop_and_kill_descendants(me, tag)


def _has_children() -> bool:
    """Whether this process has any child, running or unreaped (True when unsure).

    ``waitid(P_ALL, WNOHANG | WNOWAIT)`` reaps nothing; ECHILD means no
    child at all. ``__WALL`` counts children made by clone() with another
    exit signal too, which a plain wait ignores.
    """
    waitid = getattr(os, "waitid", None)
    if waitid is None:
        return True
    try:
        waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT | _WALL)
    except ChildProcessError:
        return False
    except OSError:
        return True
    return True


def stop_and_kill_descendants(me: int, tag: str, timeout: float = 5.0) -> None:
    """SIGSTOP every descendant (so none forks during the walk), then SIGKILL them all."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stopped = _proctree.signal_tree(signal.SIGSTOP, root_pid=me, tag=tag, include_root=False)
        if not stopped:
            return
        _proctree.signal_tree(signal.SIGKILL, root_pid=me, tag=tag, include_root=False)


def prepare_child(token: StopToken, tag: str, owner_pid: int) -> list[bool]:
    """Steps 1-6 of the module docstring; returns the 'SIGTERM received' cell.

    Also used by ProcessPool workers, which then run many tasks.
    """
    pdeathsig = _platform.set_parent_death_signal(signal.SIGKILL)
    if _owner_gone():  # the owner died before the prctl took effect
        os._exit(70)
    try:
        os.setpgid(0, 0)
    except OSError:
        pass  # already a group leader (the owner set it first)
    _proctree.adopt_tag(tag)
    _context.set_root_token(token)
    terminated = _install_signal_handlers(token)
    _start_lifeline(owner_pid, token, tag, LIFELINE_POLL_PDEATHSIG if pdeathsig else LIFELINE_POLL)
    return terminated


def _install_signal_handlers(token: StopToken) -> list[bool]:
    """SIGTERM -> Stopped once; the other stop signals back to their defaults."""
    terminated = [False]

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        _deferred.call_soon(lambda: token.stop("SIGTERM"))  # never take a lock in a handler
        if not terminated[0]:
            terminated[0] = True
            raise Stopped("terminated by SIGTERM")

    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGTERM, on_sigterm)
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:  # nohup'ed owners stay so
        signal.signal(signal.SIGINT, signal.default_int_handler)
    for name in ("SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2"):
        signum = getattr(signal, name, None)
        if signum is not None:
            signal.signal(signum, signal.SIG_DFL)
    return terminated


def _owner_sentinel() -> int | None:
    """The fd that becomes readable when the owner ends (its end of a pipe closes).

    Under forkserver our parent is the fork server, not the owner, so the
    parent PID alone cannot tell; the sentinel can under every start method.
    """
    parent = multiprocessing.parent_process()
    return parent.sentinel if parent is not None else None


def _owner_gone() -> bool:
    if os.getppid() == 1:
        return True
    sentinel = _owner_sentinel()
    return sentinel is not None and bool(multiprocessing.connection.wait([sentinel], 0))


def _start_lifeline(owner_pid: int, token: StopToken, tag: str, poll: float) -> None:
    """Watch the owner; ``owner_pid`` only names it in the stop reason; ``getppid()``
    is compared every ``poll`` seconds (the sentinel is watched all the time).

    The same thread starts the SIGTERM handler's helper thread (see
    _deferred) at the first SIGTERM only: one thread fewer to start, and
    to end at the exit, in every child that ends at its token.
    """
    sentinel = _owner_sentinel()
    parent_pid = os.getppid()  # the owner, or the fork server that started us
    wake = _deferred.start_on_wake()
    if wake is None:  # no fd for it (EMFILE): the helper thread now
        _deferred.start()
    watched = [fd for fd in (sentinel, wake) if fd is not None]

    def watch() -> None:
        while os.getppid() == parent_pid:
            ready = multiprocessing.connection.wait(watched, poll)
            if wake in ready and _deferred.woken(wake):
                watched.remove(wake)
            if sentinel is not None and sentinel in ready:
                break
        token.stop(f"owner process {owner_pid} died")
        _proctree.kill_tree(root_pid=os.getpid(), tag=tag, include_root=False, timeout=0.5)
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="quiesce-lifeline", daemon=True).start()


def _run_target(payload: bytes, tokens: list[StopToken], pass_token: bool, token: StopToken,
                writer: multiprocessing.connection.Connection, terminated: list[bool]) -> int:
    try:
        try:
            fn, args, kwargs = _pickling.loads_call(payload, tokens)
            if pass_token:
                kwargs = {**kwargs, "token": token}
            with _context.using(token):
                value = fn(*args, **kwargs)
        except Stopped as exc:
            _send(writer, ("stopped", exc.reason, terminated[0]))
            return 0
        except BaseException as exc:
            _send_failure(writer, exc)
            return 1
        _send_result(writer, value)
        return 0
    except Stopped:
        # A SIGTERM landed while we were reporting: the report may be lost,
        # the exit status and the owner's ladder still tell what happened.
        return 0


def _send_result(writer: multiprocessing.connection.Connection, value: object) -> None:
    try:
        _send(writer, ("ok", value))
    except Exception as exc:
        _send(writer, ("ok-unpicklable", f"{type(exc).__name__}: {exc}"))


def _send_failure(writer: multiprocessing.connection.Connection, exc: BaseException) -> None:
    # Imported here, on the main thread, only by a target that failed. Under fork the
    # owner has it already (logging imports it), so no fork copied its import lock held.
    import traceback

    text = "".join(traceback.format_exception(exc))
    try:
        _send(writer, ("failed", exc, text))
    except Exception:
        _send(writer, ("failed", RuntimeError(f"{type(exc).__name__}: {exc}"), text))


def _send(writer: multiprocessing.connection.Connection, message: tuple[Any, ...]) -> None:
    data = pickle.dumps(message)  # raise a pickling error here, before writing a byte
    try:
        writer.send_bytes(data)
    except (BrokenPipeError, OSError):
        pass  # the owner is gone; nobody is listening
