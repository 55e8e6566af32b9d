"""``quiesce run``: supervise one command and everything it starts.

One thread, one loop: a Python-level handler for every catchable signal,
with ``signal.set_wakeup_fd`` so the loop wakes the moment any arrives (in
``select``, or in a plain read of the wakeup fd when nothing has a
deadline; tini and dumb-init use sigwait/signalfd, the wakeup fd is
Python's equivalent). Each wake-up reaps every zombie with
``waitpid(-1, WNOHANG)`` in a loop, so a storm of orphans never piles up.
Every catchable signal is caught, so none can kill the supervisor before
its tree is gone; each is forwarded (``-r`` may rewrite or drop it).

The command runs in a process group of its own (``_launch`` sets it up,
hands it the terminal, and restores the signal state we were given); on
Linux we are the child subreaper (PID 1 in a container already is one), so
descendants that double-fork or ``setsid`` are re-parented to us: still our
descendants, still reaped here, found by the parent chain (``_tree``).
The watcher (``_watcher``) ends the tree if we are SIGKILLed.

Endings, one grace clock: a stop (SIGTERM or SIGINT, forwarded), the
timeout (``--timeout`` or SIGALRM then), or the command exiting while
descendants remain. The group gets the stop signal (and SIGCONT, so a
stopped process acts on it, as systemd does); descendants outside the group
get it once the command has exited; ``-k/--grace`` after the first of these
events, SIGKILL to everything left; then we wait (at most ``KILL_WAIT``)
until the tree is empty and reaped. Only then do we exit. Repeated signals
are forwarded, never escalated. tini and dumb-init exit when the command
does, and what it left is killed by the kernel (PID 1) or orphaned
(tini#180, dumb-init#212).

Rejected: signalfd or ``sigtimedwait`` (Python has no signalfd; blocking
every signal to wait for them would make a signal that arrives while we
write or fork wait too, and the wakeup fd needs no mask at all); polling
``waitpid`` on a timer (zombies would wait for the next tick); escalating
on a second SIGTERM (a manager that repeats its signal would cut the grace
it gave); ``subprocess`` (see ``_launch``).
"""

from __future__ import annotations

import os
import sys
import time

from quiesce._cli import _launch, _watcher
from quiesce._cli._signames import CATCHABLE, JOB_CONTROL, name, sig

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from types import FrameType

EXIT_TIMEOUT = 124
EXIT_FAILURE = _launch.EXIT_FAILURE
EXIT_NOT_EXECUTABLE = _launch.EXIT_NOT_EXECUTABLE
EXIT_NOT_FOUND = _launch.EXIT_NOT_FOUND
KILL_WAIT = 5.0  # after SIGKILL, how long the tree may take to be gone before we give up
POLL = 0.02  # while ending without a subreaper: how often to look whether the tree is empty
_LONGEST_WAIT = 3600.0  # select() refuses huge timeouts; we wake up and wait again
# Python ignores these two itself before any code runs: their state at exec is unknowable.
_SET_BY_PYTHON = frozenset({int(sig.SIGPIPE), int(sig.SIGXFSZ)})
_STOPS = frozenset({int(sig.SIGTERM), int(sig.SIGINT)})
_TTOU = frozenset({int(sig.SIGTTOU)})
_STOPPING = frozenset({int(sig.SIGSTOP), *JOB_CONTROL})  # what stops a process by default


_subreaper_already = False


class Options:
    """What ``quiesce run`` was asked to do (see docs/command-line.md)."""

    __slots__ = ("expect_exit", "foreground", "grace", "pdeathsig", "preserve_status",
                 "rewrite", "single_child", "stop_signal", "timeout", "verbose")

    def __init__(self, *, grace: float = 10.0, timeout: float | None = None,
                 stop_signal: int = 15, verbose: bool = False, single_child: bool = False,
                 rewrite: Mapping[int, int] | None = None,
                 expect_exit: frozenset[int] = frozenset(), pdeathsig: int = 0,
                 preserve_status: bool = False, foreground: bool = False) -> None:
        self.grace = grace
        self.timeout = timeout  # None or 0: no timeout; inf: none either
        self.stop_signal = stop_signal
        self.verbose = verbose
        self.single_child = single_child
        self.rewrite = dict(rewrite or {})
        self.expect_exit = expect_exit
        self.pdeathsig = pdeathsig
        self.preserve_status = preserve_status
        self.foreground = foreground


def exit_status(wait_status: int) -> int:
    """A shell's view of a wait status: the exit code, or 128+N for signal N."""
    if os.WIFSIGNALED(wait_status):
        return 128 + os.WTERMSIG(wait_status)
    return os.waitstatus_to_exitcode(wait_status)


def supervise(argv: Sequence[str], options: Options,
              env: Mapping[str, str] | None = None) -> int:
    """Run ``argv`` to the end of its whole tree; return our exit status.

    For the command line only: the calling process catches every signal
    from here on and keeps catching (and dropping) them after the return, so
    that a late signal cannot replace the status; it should exit right after.
    """
    return _Supervisor(options).run(argv, env)


class _Supervisor:
    def __init__(self, options: Options) -> None:
        self.opts = options
        self.me = os.getpid()
        self.group_mode = not options.single_child and not options.foreground
        self.tag = "run" + os.urandom(8).hex()
        self.pid = 0
        self.pgid = 0
        self.status: int | None = None  # the command's wait status, once reaped
        self.ending_since: float | None = None
        self.group_stopped = False  # the command's group got the stop signal already
        self.killed_at: float | None = None
        self.timed_out = False
        self.tty_fd: int | None = None
        self.watcher: int | None = None
        self.pipes_to_ignore = 0  # SIGPIPEs our own writes (stderr, watcher) caused
        self.expect_stop = False  # we forwarded a signal that stops the command
        self._command_exit_handled = False  # leftovers were told when the command ended
        self.subreaper = False
        self.blind_init = False
        self.linux_tree = sys.platform.startswith("linux")

    # -- logging ---------------------------------------------------------------------
    def log(self, message: str) -> None:
        if self.opts.verbose:
            self.say(message)

    def say(self, message: str) -> None:
        """To stderr, unbuffered; a closed or broken stderr only silences us.

        While the command has the terminal we write from a background group: with
        ``stty tostop`` that raises SIGTTOU, which we would take for job control,
        so it is blocked around the write (the kernel then lets the write through).
        """
        old = sig.pthread_sigmask(sig.SIG_BLOCK, _TTOU) if self.tty_fd is not None else None
        try:
            os.write(2, f"quiesce run: {message}\n".encode(errors="replace"))
        except BrokenPipeError:
            self.pipes_to_ignore += 1
            self.opts.verbose = False
        except OSError:
            self.opts.verbose = False
        finally:
            if old is not None:
                sig.pthread_sigmask(sig.SIG_SETMASK, old)

    # -- the whole run ---------------------------------------------------------------
    def run(self, argv: Sequence[str], env: Mapping[str, str] | None) -> int:
        opts = self.opts
        _hold_standard_fds()
        ignored = frozenset(s for s in CATCHABLE if s not in _SET_BY_PYTHON
                            and sig.getsignal(s) == sig.SIG_IGN)
        global _subreaper_already
        if self.me != 1 and self.linux_tree and not _subreaper_already:
            self.watcher = _watcher.start(self.tag, stop_signal=opts.stop_signal,
                                          grace=opts.grace, single_child=opts.single_child)
        # Everything up to reap_middle() runs while the watcher's double fork does
        # (ctypes, the handlers): start-up is a budget.
        from quiesce._proc import _platform

        wake_r, wake_w = os.pipe()
        for fd in (wake_r, wake_w):
            os.set_blocking(fd, False)
        for signum in CATCHABLE:
            sig.signal(signum, _note)
        sig.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
        mask = frozenset(int(s) for s in sig.pthread_sigmask(sig.SIG_SETMASK, ()))
        try:
            if not opts.foreground and _owns_terminal(0):
                self.tty_fd = 0
            command_env = dict(os.environ if env is None else env)
            tags = command_env.get(_launch.TAGS_ENV, "").split()
            command_env[_launch.TAGS_ENV] = " ".join([*tags, self.tag])
            if self.watcher is not None:
                _watcher.reap_middle()  # before we become a subreaper: it must not come to us
            if opts.pdeathsig:
                _platform.set_parent_death_signal(opts.pdeathsig)
            self.subreaper = _platform.set_child_subreaper() or self.me == 1
            # A second supervise() in this process (tests) cannot double-fork a watcher
            # that is not its own child any more: it goes without.
            _subreaper_already = self.subreaper
            if self.me == 1:
                from quiesce._cli import _tree  # here and below only when needed: start-up

                self.blind_init = not _tree.process_table_is_ours()  # /proc lies about PIDs
            if not self.subreaper:
                self.linux_tree = False  # the parent chain no longer holds every descendant
            try:
                self.pid = _launch.launch(
                    argv, command_env, new_group=not opts.foreground, tty_fd=self.tty_fd,
                    death_signal=opts.stop_signal, ignored=ignored, mask=mask)
            except _launch.LaunchError as exc:
                self.say(str(exc))
                return exc.status
            self.pgid = self.pid if not opts.foreground else os.getpgrp()
            self._tell_watcher(f"P{self.pid}\n")
            self.log(f"started {argv[0]!r} as PID {self.pid} "
                     f"{'in its own process group' if not opts.foreground else 'in ours'}"
                     f"{', as child subreaper' if self.subreaper else ''}")
            try:
                os.chdir("/")  # hold no directory (a mount) busy; the command keeps its own
            except OSError:
                pass
            return self._loop(wake_r)
        finally:
            # Our handlers stay: a signal arriving from now on is caught and dropped, so
            # it cannot replace the status (restoring the defaults would let it kill us).
            sig.set_wakeup_fd(-1)
            self._take_terminal_back()
            self._tell_watcher(".")
            os.close(wake_r)
            os.close(wake_w)
            if self.watcher is not None:
                os.close(self.watcher)

    def _tell_watcher(self, message: str) -> None:
        if not _watcher.tell(self.watcher, message):
            self.pipes_to_ignore += 1  # its SIGPIPE is ours, not to be forwarded

    def _loop(self, wake_r: int) -> int:
        opts = self.opts
        timeout = opts.timeout
        deadline = (None if not timeout or timeout == float("inf")
                    else time.monotonic() + timeout)
        while True:
            self._reap()
            for signum in _drain(wake_r):
                self._on_signal(signum)
            self._reap()
            now = time.monotonic()
            if deadline is not None and self.status is None and now >= deadline:
                deadline = None
                self._time_up(f"timeout after {timeout:g} s")
            if self.status is not None and opts.single_child:
                return self._result()
            if self.status is not None and not self._command_exit_handled:
                self._command_exit_handled = True
                if self._tree_alive():
                    self._end_leftovers()
            if (self.ending_since is not None and self.killed_at is None
                    and now >= self.ending_since + opts.grace):
                self._kill_all()
            elif self.killed_at is not None and not opts.single_child:
                # Again on every poll while anything is left: a process forked after the
                # first sweep (a fork bomb) gets its SIGKILL too.
                self._signal_rest(int(sig.SIGKILL))
            if self.status is not None and not self._tree_alive():
                self._reap()
                return self._result()
            if self.killed_at is not None and now >= self.killed_at + KILL_WAIT:
                left = self._descendants()
                self.say(f"{len(left)} process(es) survived SIGKILL for {KILL_WAIT:g} s "
                         f"(PIDs {sorted(left)}); giving up")
                return EXIT_FAILURE
            _wait(wake_r, self._wait_time(now, deadline))

    def _wait_time(self, now: float, deadline: float | None) -> float | None:
        """How long the loop may sleep; None: until a signal arrives."""
        if deadline is None and self.ending_since is None and self.killed_at is None:
            return None
        wake = [_LONGEST_WAIT]
        if deadline is not None:
            wake.append(deadline - now)
        if self.ending_since is not None and self.killed_at is None:
            wake.append(self.ending_since + self.opts.grace - now)
        if self.ending_since is not None and not self.subreaper:
            wake.append(POLL)
        if self.killed_at is not None:
            wake.append(POLL)
        return max(0.0, min(wake))

    def _result(self) -> int:
        assert self.status is not None
        code = exit_status(self.status)
        if self.timed_out and not self.opts.preserve_status:
            killed = os.WIFSIGNALED(self.status) and os.WTERMSIG(self.status) == sig.SIGKILL
            code = 128 + int(sig.SIGKILL) if killed else EXIT_TIMEOUT
        elif code in self.opts.expect_exit:
            self.log(f"exit status {code} expected (-e): 0")
            code = 0
        self.log(f"exit status {code}")
        return code

    # -- events ----------------------------------------------------------------------
    def _reap(self) -> None:
        while True:
            try:
                pid, wait_status = os.waitpid(-1, os.WNOHANG | os.WUNTRACED)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if os.WIFSTOPPED(wait_status):
                if pid == self.pid:
                    self._command_stopped(os.WSTOPSIG(wait_status))
                continue
            if pid == self.pid:
                self.status = wait_status
                self.log(f"command PID {pid} ended ({_describe(wait_status)})")
                self._take_terminal_back()
            else:
                self.log(f"reaped PID {pid} ({_describe(wait_status)})")

    def _command_stopped(self, signum: int) -> None:
        """Ctrl-Z at the terminal stopped the command: stop too, so the shell gets it back.

        Only when we handed the command the terminal: then we are a shell's job,
        and the shell waits for *us* to stop. Its ``fg`` (SIGCONT to our group)
        resumes us; the SIGCONT is forwarded and the terminal handed back.
        """
        if self.expect_stop:
            self.expect_stop = False  # our own forwarded job-control signal did it
            return
        tty = self.tty_fd
        if tty is None or self.me == 1 or not _is_foreground(tty, self.pgid):
            return
        self.log(f"command stopped by {name(signum)}: stopping too, so the shell takes over")
        _set_foreground(tty, os.getpgrp())
        os.kill(self.me, sig.SIGSTOP)

    def _on_signal(self, signum: int) -> None:
        if signum == sig.SIGCHLD:
            return
        if signum == sig.SIGPIPE and self.pipes_to_ignore:
            self.pipes_to_ignore -= 1  # our own write to a closed stderr caused it
            return
        if signum == sig.SIGALRM and self.opts.timeout:
            if self.status is None and not self.timed_out:
                self._time_up("SIGALRM: time is up")
            return
        target = self.opts.rewrite.get(signum, signum)
        if signum in JOB_CONTROL and self.group_mode and signum not in self.opts.rewrite:
            target = int(sig.SIGSTOP)  # as dumb-init: stop the whole group, not just ask it
        if target:
            self._forward(target, f"{name(signum)}" if target == signum
                          else f"{name(signum)} as {name(target)}")
            if target in _STOPPING:
                self.expect_stop = True
        if signum in JOB_CONTROL and self.me != 1:
            self.log("stopping ourselves too")
            os.kill(self.me, sig.SIGSTOP)
            self._give_terminal()  # continued: the command's group reads the terminal again
        elif signum == sig.SIGCONT:
            self._give_terminal()
        if signum in _STOPS and target and self.ending_since is None:
            self.group_stopped = True
            self._begin_ending(f"{name(signum)}")

    def _forward(self, signum: int, what: str) -> None:
        if self.status is None:
            if self.group_mode:
                self.log(f"forwarded {what} to group {self.pgid}")
                _kill(-self.pgid, signum)
            else:
                self.log(f"forwarded {what} to PID {self.pid}")
                _kill(self.pid, signum)
        elif not self.opts.single_child:
            count = self._signal_rest(signum)
            self.log(f"forwarded {what} to {count} remaining process(es)")

    def _time_up(self, why: str) -> None:
        self.timed_out = True
        stop = self.opts.stop_signal
        if stop:
            target = f"group {self.pgid}" if self.group_mode else f"PID {self.pid}"
            self.log(f"{why}: sending {name(stop)} to {target}")
            _kill(-self.pgid if self.group_mode else self.pid, stop)
            if stop not in (sig.SIGKILL, sig.SIGCONT):
                _kill(-self.pgid if self.group_mode else self.pid, sig.SIGCONT)
            self.group_stopped = True
        else:
            self.log(f"{why}: sending no signal (-s 0)")
        if self.ending_since is None:
            self._begin_ending(why)

    def _begin_ending(self, why: str) -> None:
        self.ending_since = time.monotonic()
        grace = self.opts.grace
        self.log(f"{why}: SIGKILL to what is left in {grace:g} s" if grace != float("inf")
                 else f"{why}: no SIGKILL (infinite grace)")

    def _end_leftovers(self) -> None:
        """The command exited and descendants remain: the stop signal to all of them."""
        stop = self.opts.stop_signal
        skip = self.pgid if self.group_stopped and self.group_mode else None
        if stop:
            count = self._signal_rest(stop, skip_group=skip)
            self._signal_rest(int(sig.SIGCONT), skip_group=skip)
            self.log(f"command ended, {name(stop)} to {count} remaining process(es)")
        if self.ending_since is None:
            self._begin_ending("command ended")

    def _kill_all(self) -> None:
        self.killed_at = time.monotonic()
        if self.opts.single_child:
            if self.status is None:
                self.log(f"grace over: SIGKILL to PID {self.pid}")
                _kill(self.pid, sig.SIGKILL)
            return
        if self.status is None:
            _kill(-self.pgid if self.group_mode else self.pid, sig.SIGKILL)
        count = self._signal_rest(int(sig.SIGKILL))
        self.log(f"grace over: SIGKILL to {count} process(es)")

    # -- the tree --------------------------------------------------------------------
    def _signal_rest(self, signum: int, skip_group: int | None = None) -> int:
        """``signum`` to every live descendant (never us, never a stranger)."""
        if self.blind_init:
            _kill(-1, signum)  # as PID 1: exactly our namespace
            return -1
        if self.linux_tree:
            from quiesce._cli import _tree

            return _tree.signal_descendants(self.me, signum, skip_group=skip_group)
        from quiesce._proc import _proctree  # off Linux only: psutil is slow to import

        return _proctree.signal_tree(signum, root_pid=self.me, tag=self.tag,
                                     include_root=False)

    def _descendants(self) -> list[int]:
        if self.linux_tree and not self.blind_init:
            from quiesce._cli import _tree

            return list(_tree.descendants(self.me))
        if self.blind_init:
            return []
        from quiesce._proc import _proctree

        refs = _proctree.snapshot(root_pid=self.me, tag=self.tag, include_root=False)
        for ref in refs:
            ref.close()
        return [ref.pid for ref in refs]

    def _tree_alive(self) -> bool:
        """As a subreaper, any child at all (orphans come to us); else a /proc walk."""
        if self.subreaper:
            return _have_children()
        return bool(self._descendants())

    # -- the terminal ----------------------------------------------------------------
    def _give_terminal(self) -> None:
        if self.tty_fd is not None and self.status is None and _owns_terminal(self.tty_fd):
            _set_foreground(self.tty_fd, self.pgid)

    def _take_terminal_back(self) -> None:
        if self.tty_fd is not None:
            _set_foreground(self.tty_fd, os.getpgrp())
            self.tty_fd = None


def _hold_standard_fds() -> None:
    """A closed stdin/stdout/stderr gets a close-on-exec /dev/null placeholder.

    Else our first pipe would take its number, our log lines would go into
    that pipe, and the command would inherit it as its stderr. Close-on-exec:
    the command still finds the descriptor closed, as it was given.
    """
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            placeholder = os.open(os.devnull, os.O_RDWR)  # the lowest free number: fd
            if placeholder != fd:
                os.close(placeholder)


def _describe(wait_status: int) -> str:
    if os.WIFSIGNALED(wait_status):
        return f"killed by {name(os.WTERMSIG(wait_status))}"
    return f"exit status {os.waitstatus_to_exitcode(wait_status)}"


def _kill(pid: int, signum: int) -> None:
    """Signal our unreaped child or its group (a PID it pins: never a stranger)."""
    try:
        os.kill(pid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def _have_children() -> bool:
    """Any child left, exited or not (zombies are reaped by the loop right after)."""
    try:
        os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return False
    return True


def _owns_terminal(fd: int) -> bool:
    return _is_foreground(fd, os.getpgrp())


def _is_foreground(fd: int, pgid: int) -> bool:
    try:
        return os.isatty(fd) and os.tcgetpgrp(fd) == pgid
    except OSError:
        return False


def _set_foreground(fd: int, pgid: int) -> None:
    # A background group calling tcsetpgrp gets SIGTTOU unless it blocks it; we catch
    # SIGTTOU (to forward it), so block it around the call.
    old = sig.pthread_sigmask(sig.SIG_BLOCK, _TTOU)
    try:
        os.tcsetpgrp(fd, pgid)
    except OSError:
        pass
    finally:
        sig.pthread_sigmask(sig.SIG_SETMASK, old)


def _note(signum: int, frame: FrameType | None) -> None:
    """Installed so the signal is caught (and written to the wakeup fd); the loop acts."""


def _wait(fd: int, timeout: float | None) -> None:
    """Until the wakeup fd is readable (a signal arrived) or ``timeout`` passes.

    Without a timeout a blocking ``poll`` would do, but so does a blocking read of
    nothing: both wait in the kernel; ``select`` is imported only when a deadline
    needs it (its import is a measurable part of ``quiesce run -- true``).
    """
    if timeout is not None:
        from quiesce._core._fd_wait import wait_readable  # poll: any fd number

        wait_readable(fd, timeout)
        return
    os.set_blocking(fd, True)
    try:
        _pending.extend(os.read(fd, 512))  # the signal number(s) that woke us
    finally:
        os.set_blocking(fd, False)


_pending: list[int] = []  # bytes _wait read off the wakeup fd for _drain to hand out


def _drain(fd: int) -> list[int]:
    data = bytes(_pending)
    _pending.clear()
    while True:
        try:
            chunk = os.read(fd, 512)
        except BlockingIOError:
            break
        if not chunk:
            break
        data += chunk
    return list(data)

