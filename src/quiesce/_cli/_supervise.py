"""``quiesce run``: supervise one command and everything it starts.

One thread, one loop: Python-level handlers for every forwarded signal and
SIGCHLD, with ``signal.set_wakeup_fd`` so the loop wakes in ``select`` the
moment any arrives (tini and dumb-init use signalfd/sigwait; the wakeup fd
is Python's equivalent). Each wake-up reaps every zombie with
``waitpid(-1, WNOHANG)`` in a loop, so a storm of orphans never piles up.

The command runs in a process group of its own with a tag in its
environment; on Linux we are the child subreaper (PID 1 in a container
already is one), so descendants that double-fork or ``setsid`` are
re-parented to us: still our descendants, still reaped here. Off Linux the
tag finds them (see _proctree).

Rejected: signalfd or ``sigwait`` (Python has no signalfd, and blocking
the signals would leak the mask into the command unless reset between
fork and exec); a SIGCHLD handler that reaps inside the handler (Python
runs handlers between bytecodes of the main thread anyway, so the loop is
as prompt and simpler); polling ``waitpid`` on a timer (zombies would
wait for the next tick).

Endings, all by one procedure (``_begin_stop``): a stop signal (forwarded
to the command's group first), ``--timeout``, or the command exiting while
descendants remain. Every remaining descendant gets ``--signal``; after
``--grace`` SIGKILL; then we wait (at most ``--kill-after``) until the tree
is empty and reaped. Only then do we exit: tini and dumb-init exit when
the command does, and what it left behind is killed by the kernel (PID 1)
or orphaned (tini#180, dumb-init#212).
"""

from __future__ import annotations

import dataclasses
import errno
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from types import FrameType

from quiesce._proc import _platform, _proctree
from quiesce._proc._command import signal_group

FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT,
             signal.SIGUSR1, signal.SIGUSR2)
STOPPING = frozenset({signal.SIGTERM, signal.SIGINT})
POLL = 0.02  # while stopping: how often to look whether the tree is empty yet

EXIT_TIMEOUT = 124
EXIT_FAILURE = 125
EXIT_NOT_EXECUTABLE = 126
EXIT_NOT_FOUND = 127


@dataclasses.dataclass(frozen=True)
class Options:
    grace: float = 10.0
    kill_after: float = 5.0
    timeout: float | None = None
    stop_signal: signal.Signals = signal.SIGTERM
    verbose: bool = False


def exit_status(wait_status: int) -> int:
    """A shell's view of a wait status: the exit code, or 128+N for signal N."""
    if os.WIFSIGNALED(wait_status):
        return 128 + os.WTERMSIG(wait_status)
    return os.waitstatus_to_exitcode(wait_status)


def supervise(argv: Sequence[str], options: Options,
              env: Mapping[str, str] | None = None) -> int:
    """Run ``argv`` to the end of its whole tree; return our exit status."""
    return _Supervisor(options).run(argv, env)


class _Supervisor:
    def __init__(self, options: Options) -> None:
        self.options = options
        self.tag = _proctree.new_tag()
        self.me = os.getpid()
        self.proc: subprocess.Popen[bytes] | None = None
        self.status: int | None = None  # the command's wait status, once reaped
        self.stopping_since: float | None = None
        self.killed_at: float | None = None
        self.timed_out = False
        # Linux: every descendant is our child or below one, for ever (subreaper or PID 1).
        self.subreaper = False
        # PID 1 without a /proc of its own namespace: nothing read there can be trusted,
        # but kill(-1) reaches exactly the namespace's processes.
        self.blind_init = self.me == 1 and not _proctree.process_table_is_ours()

    def log(self, message: str) -> None:
        if self.options.verbose:
            print(f"quiesce run: {message}", file=sys.stderr, flush=True)

    # -- the whole run -------------------------------------------------------------
    def run(self, argv: Sequence[str], env: Mapping[str, str] | None) -> int:
        self.subreaper = subreaper = _platform.set_child_subreaper() or self.me == 1
        wake_r, wake_w = os.pipe()
        for fd in (wake_r, wake_w):
            os.set_blocking(fd, False)
        previous = {sig: signal.signal(sig, _note) for sig in (*FORWARDED, signal.SIGCHLD)}
        old_wakeup = signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
        try:
            code = self._start(argv, env)
            if code is not None:
                return code
            self.log(f"started {argv[0]!r} as PID {self.pid} in its own process group"
                     f"{', as child subreaper' if subreaper else ''}")
            with _Foreground(self.pid):
                return self._loop(wake_r)
        finally:
            signal.set_wakeup_fd(old_wakeup)
            for sig, handler in previous.items():
                signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
            os.close(wake_r)
            os.close(wake_w)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def _start(self, argv: Sequence[str], env: Mapping[str, str] | None) -> int | None:
        try:
            self.proc = subprocess.Popen(list(argv), process_group=0,
                                         env=_proctree.env_with_tag(self.tag, env))
        except FileNotFoundError:
            print(f"quiesce run: {argv[0]}: command not found", file=sys.stderr)
            return EXIT_NOT_FOUND
        except PermissionError:
            print(f"quiesce run: {argv[0]}: permission denied (not executable)",
                  file=sys.stderr)
            return EXIT_NOT_EXECUTABLE
        except OSError as exc:
            if exc.errno in (errno.ENOEXEC, errno.EISDIR):
                print(f"quiesce run: {argv[0]}: cannot execute: {exc.strerror}",
                      file=sys.stderr)
                return EXIT_NOT_EXECUTABLE
            print(f"quiesce run: cannot start {argv[0]}: {exc}", file=sys.stderr)
            return EXIT_FAILURE
        return None

    def _loop(self, wake_r: int) -> int:
        opts = self.options
        deadline = None if opts.timeout is None else time.monotonic() + opts.timeout
        while True:
            self._reap()
            for sig in _drain(wake_r):
                self._on_signal(sig)
            self._reap()
            now = time.monotonic()
            if deadline is not None and self.status is None and now >= deadline:
                deadline = None
                self.timed_out = True
                self.log(f"timeout after {opts.timeout} s")
                self._begin_stop(group_signalled=False)
            if self.status is not None and self.stopping_since is None:
                if not self._tree_alive():
                    return self._result()
                self.log(f"command exited ({exit_status(self.status)}); "
                         f"{len(self._tree_pids())} descendant(s) remain")
                self._begin_stop(group_signalled=False)
            if (self.stopping_since is not None and self.killed_at is None
                    and now >= self.stopping_since + opts.grace):
                self._kill_all()
            if self.status is not None and not self._tree_alive():
                self._reap()
                return self._result()
            if self.killed_at is not None and now >= self.killed_at + opts.kill_after:
                left = self._tree_pids()
                print(f"quiesce run: {len(left)} process(es) survived SIGKILL for "
                      f"{opts.kill_after} s (PIDs {left}); giving up", file=sys.stderr)
                return EXIT_FAILURE
            select.select([wake_r], [], [], self._wait_time(now, deadline))

    def _wait_time(self, now: float, deadline: float | None) -> float | None:
        wake = [] if deadline is None else [deadline - now]
        if self.stopping_since is not None:
            wake.append(POLL)
        return max(0.0, min(wake)) if wake else None

    def _result(self) -> int:
        if self.timed_out:
            return EXIT_TIMEOUT
        assert self.status is not None
        code = exit_status(self.status)
        self.log(f"tree empty; exit status {code}")
        return code

    # -- events -------------------------------------------------------------------------
    def _reap(self) -> None:
        while True:
            try:
                pid, wait_status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if self.proc is not None and pid == self.proc.pid:
                self.status = wait_status
                self.proc.returncode = os.waitstatus_to_exitcode(wait_status)

    def _on_signal(self, signum: int) -> None:
        if signum == signal.SIGCHLD:
            return
        sig = signal.Signals(signum)
        if self.status is None:
            self.log(f"forwarding {sig.name} to process group {self.pid}")
            signal_group(self.pid, sig)
        if sig in STOPPING:
            if self.stopping_since is None:
                self._begin_stop(group_signalled=self.status is None)
            elif self.killed_at is None:
                self.log(f"second {sig.name}: skipping the rest of the grace")
                self._kill_all()

    def _begin_stop(self, *, group_signalled: bool) -> None:
        """--signal to every remaining descendant (the group too unless it just got one)."""
        self.stopping_since = time.monotonic()
        sig = self.options.stop_signal
        # A stopped (SIGSTOP'ed) process keeps the signal pending until SIGKILL:
        # SIGCONT after it, as systemd does, so it acts within the grace.
        if self.blind_init:
            _kill_namespace(sig)
            _kill_namespace(signal.SIGCONT)
            return
        skip_group = self.pid if group_signalled else None
        count = 0
        for ref in self._snapshot():
            if skip_group is None or _pgid(ref.pid) != skip_group:
                count += ref.send(sig)
            ref.send(signal.SIGCONT)
            ref.close()
        if count:
            self.log(f"sent {sig.name} to {count} process(es); SIGKILL in {self.options.grace} s")

    def _kill_all(self) -> None:
        self.killed_at = time.monotonic()
        if self.blind_init:
            _kill_namespace(signal.SIGKILL)
            return
        count = _proctree.signal_tree(signal.SIGKILL, root_pid=self.me, tag=self.tag,
                                      include_root=False)
        self.log(f"grace over: SIGKILL to {count} process(es)")

    # -- the tree ---------------------------------------------------------------------------
    def _snapshot(self) -> list[_proctree.ProcRef]:
        return _proctree.snapshot(root_pid=self.me, tag=self.tag, include_root=False)

    def _tree_alive(self) -> bool:
        """As a subreaper, any child at all (orphans come to us); else a /proc walk."""
        if self.subreaper:
            return _have_children()
        return bool(self._tree_pids())

    def _tree_pids(self) -> list[int]:
        refs = self._snapshot()
        for ref in refs:
            ref.close()
        return [ref.pid for ref in refs]


def _have_children() -> bool:
    """Any child left, exited or not (zombies are reaped by the loop right after)."""
    try:
        os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return False
    return True


def _kill_namespace(sig: int) -> None:
    """As PID 1: every process of our PID namespace but us (kill(2) with pid -1)."""
    try:
        os.kill(-1, sig)
    except ProcessLookupError:
        pass


def _note(signum: int, frame: FrameType | None) -> None:
    """Installed so the signal is caught (and written to the wakeup fd); the loop acts."""


def _drain(fd: int) -> list[int]:
    data = b""
    while True:
        try:
            chunk = os.read(fd, 512)
        except BlockingIOError:
            break
        if not chunk:
            break
        data += chunk
    return list(data)


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:
        return None


class _Foreground:
    """Give the command's group the terminal (if we have it), so it can read from it."""

    def __init__(self, pgid: int) -> None:
        self.pgid = pgid
        self.fd: int | None = None
        self.previous: int | None = None

    def __enter__(self) -> None:
        try:
            if os.isatty(0) and os.tcgetpgrp(0) == os.getpgrp():
                self.fd, self.previous = 0, os.getpgrp()
                self._set(self.pgid)
        except OSError:
            self.fd = None

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None and self.previous is not None:
            self._set(self.previous)

    def _set(self, pgid: int) -> None:
        # A background group calling tcsetpgrp gets SIGTTOU unless it ignores it.
        old = signal.signal(signal.SIGTTOU, signal.SIG_IGN)
        try:
            os.tcsetpgrp(self.fd or 0, pgid)
        except OSError:
            pass
        finally:
            signal.signal(signal.SIGTTOU, old)
