"""The watcher: ends the command's tree if the supervisor is SIGKILLed.

Design note
-----------
Nothing in a process runs after SIGKILL. The command itself is covered by
the kernel (PR_SET_PDEATHSIG, set in ``_launch``: it gets the stop signal
at once); its descendants are not. The watcher outlives the supervisor to
give them the stop signal too and, after the grace, SIGKILL to whatever is
left: the same ladder as a normal stop.

It is a grandchild made by a double fork *before* the supervisor becomes a
child subreaper, so it is re-parented away at once: the supervisor's only
children are the command and the orphans it reaps (tini's reaping test
counts them). The fork is not followed by an exec: the watcher already has
in memory all it needs, so it costs a fork, not an interpreter start. It
runs in a session of its own with every catchable signal ignored (a
manager signalling the supervisor's group or cgroup must not end it before
the supervisor is done), holds no file descriptor but its pipe, and exits as
soon as the supervisor does.

The supervisor holds the only write end of a pipe whose read end the
watcher blocks on. It writes ``P<pid>`` once the command runs and ``.``
just before it exits normally; EOF without ``.`` means it died. The watcher
then finds the command's tree by the tag in QUIESCE_TAGS (the parent chain
is gone with the supervisor), pinning each process with a pidfd before it
re-checks the tag, so a recycled PID is never signalled.

Rejected: the library's guardian (``quiesce._proc._guardian``): it is the
owner's child (the supervisor would have a child that is not the command's),
it SIGKILLs at once instead of giving the grace, and starting it costs an
interpreter start-up; PR_SET_PDEATHSIG on every descendant (only the
command is ours to set up).
"""

from __future__ import annotations

import os
import time

from quiesce._cli._signames import CATCHABLE, sig

POLL = 0.05
SWEEP_SECONDS = 3.0


def start(tag: str, *, stop_signal: int, grace: float, single_child: bool) -> int | None:
    """Start the watcher; return the write end of its pipe (None if it cannot start).

    Call ``reap_middle()`` before becoming a child subreaper.
    """
    try:
        read_end, write_end = os.pipe()
    except OSError:
        return None
    try:
        pid = os.fork()
    except OSError:
        os.close(read_end)
        os.close(write_end)
        return None
    if pid == 0:  # pragma: no cover - the middle process and the watcher
        try:
            os.setsid()
            if os.fork() == 0:
                os.close(write_end)
                _run(read_end, tag, stop_signal, grace, single_child)
        finally:
            os._exit(0)
    os.close(read_end)
    global _middle
    _middle = pid
    return write_end


_middle = 0


def reap_middle() -> None:
    """Wait for the middle process of the double fork (it exits at once)."""
    global _middle
    if _middle:
        try:
            os.waitpid(_middle, 0)
        except ChildProcessError:
            pass
        _middle = 0


def tell(fd: int | None, message: str) -> bool:
    """Write ``message`` to the watcher; False if its pipe broke (a SIGPIPE came with it)."""
    if fd is None:
        return True
    try:
        os.write(fd, message.encode())
    except BrokenPipeError:
        return False  # the watcher died: nothing to tell
    except OSError:
        pass
    return True


def _run(fd: int, tag: str, stop_signal: int, grace: float,
         single_child: bool) -> None:  # pragma: no cover - runs in the watcher
    sig.set_wakeup_fd(-1)
    for signum in CATCHABLE:
        sig.signal(signum, sig.SIG_IGN)
    os.chdir("/")
    _close_all_but(fd)
    data = b""
    while chunk := _read(fd):
        data += chunk
    if data.endswith(b"."):
        return  # the supervisor exited normally
    command = None
    for line in data.split(b"\n"):
        if line.startswith(b"P") and line[1:].isdigit():
            command = int(line[1:])
    if command is None:
        return  # died before the command started: nothing of ours runs
    from quiesce._cli import _tree  # only now: the supervisor never pays for it

    def still_tagged(pid: int) -> bool:
        return pid in _tree.tagged(tag)

    def victims() -> list[int]:
        found = _tree.tagged(tag)
        return [p for p in found if p == command] if single_child else found

    if not single_child and stop_signal:
        _tree.signal_each(victims(), stop_signal, still_tagged)
        _tree.signal_each(victims(), sig.SIGCONT, still_tagged)
    deadline = time.monotonic() + min(grace, 1e9)
    while victims() and time.monotonic() < deadline:
        time.sleep(POLL)
    sweep_until = time.monotonic() + SWEEP_SECONDS
    while time.monotonic() < sweep_until:
        if not _tree.signal_each(victims(), sig.SIGKILL, still_tagged):
            break
        time.sleep(0.005)


def _read(fd: int) -> bytes:
    try:
        return os.read(fd, 4096)
    except OSError:
        return b""


def _close_all_but(keep: int) -> None:
    null = os.open(os.devnull, os.O_RDWR)
    for target in (0, 1, 2):
        if target != null:
            os.dup2(null, target)
    try:
        fds = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:
        fds = list(range(3, 256))
    for fd in fds:
        if fd > 2 and fd != keep:
            try:
                os.close(fd)
            except OSError:
                pass
