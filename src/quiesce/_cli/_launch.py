"""Start the supervised command: fork, set it up, exec, report failure by pipe.

Design note
-----------
Between ``fork`` and ``exec`` the child, still running the supervisor's
Python, prepares what the command must find when its first instruction
runs:

* its own process group (unless ``--foreground``), set by the child *and*
  the parent, as shells do, so neither can act on a group that is not yet
  there;
* the terminal's foreground, handed over by the child itself when the
  supervisor held it: a shell that checks at start-up whether it is in the
  foreground (bash does, and stops itself with SIGTTIN if not) finds it is.
  Handing it over from the parent after the fork races with the command
  (tini and dumb-init hand it over early for the same reason);
* PR_SET_PDEATHSIG with the stop signal (Linux): if the supervisor is
  SIGKILLed the kernel sends the command the stop signal at once, as GNU
  ``timeout`` does; what the command leaves is the watcher's (``_watcher``);
* the signal state the supervisor was given: signals ignored then are
  ignored again (the supervisor catches every signal to forward it), every
  other one is at its default, and the blocked mask is restored (the
  supervisor unblocked everything so that a mask inherited from its parent
  cannot make it deaf to SIGCHLD or SIGTERM).

All signals are blocked around the fork, so none reaches the child while it
still runs the supervisor's handlers (they would write to the supervisor's
wake-up pipe); the child unblocks them with its final mask, just before exec.
An error in the child travels back through a close-on-exec pipe: EOF means
the exec happened.

Rejected: ``subprocess.Popen`` (its import costs more than the whole start-up
budget of ``quiesce run``; it cannot restore an inherited signal mask or
ignored signals other than SIGPIPE/SIGXFSZ, and its ``preexec_fn`` runs after
``process_group`` is set but cannot hand over the terminal before it);
``os.posix_spawn`` (no terminal hand-over, no PDEATHSIG); a compiled exec
shim (a build step for users of a pure-Python package).
"""

from __future__ import annotations

import errno
import os

from quiesce._cli._signames import CATCHABLE, sig

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

TAGS_ENV = "QUIESCE_TAGS"  # the tag list every descendant inherits (as quiesce._proc's)
EXIT_FAILURE = 125
EXIT_NOT_EXECUTABLE = 126
EXIT_NOT_FOUND = 127


class LaunchError(Exception):
    """The command could not be started: ``status`` is ours to exit with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def launch(argv: Sequence[str], env: Mapping[str, str], *, new_group: bool,
           tty_fd: int | None, death_signal: int, ignored: frozenset[int],
           mask: frozenset[int]) -> int:
    """Fork and exec ``argv``; return its PID or raise LaunchError.

    ``tty_fd``: a terminal whose foreground the command's group gets before exec.
    ``ignored``/``mask``: the dispositions and blocked set the command inherits.
    """
    from quiesce._proc import _platform  # ctypes: imported late, see _supervise

    parent = os.getpid()
    try:
        err_r, err_w = os.pipe()  # close-on-exec both
    except OSError as exc:
        raise LaunchError(EXIT_FAILURE, f"cannot start {argv[0]}: {exc}") from None
    old_mask = sig.pthread_sigmask(sig.SIG_BLOCK, CATCHABLE)
    try:
        try:
            pid = os.fork()
        except OSError as exc:  # EAGAIN, ENOMEM: no process to run it in
            os.close(err_r)
            os.close(err_w)
            raise LaunchError(EXIT_FAILURE, f"cannot start {argv[0]}: fork: {exc}") from None
        if pid == 0:  # pragma: no cover - the child execs or _exits
            _child(argv, env, parent, err_w, new_group, tty_fd,
                   death_signal if _platform.IS_LINUX else 0, ignored, mask)
    finally:
        if os.getpid() == parent:
            sig.pthread_sigmask(sig.SIG_SETMASK, old_mask)
    os.close(err_w)
    if new_group:
        try:
            os.setpgid(pid, pid)
        except OSError:
            pass  # the child did it and exec'd already (EACCES), or it died (ESRCH)
    try:
        report = _read_all(err_r)
    finally:
        os.close(err_r)
    if not report:
        return pid
    os.waitpid(pid, 0)
    stage, _, code = report.decode().partition(":")
    number = int(code or 0)
    if stage == "exec":
        name = argv[0]
        if number in (errno.ENOENT, errno.ENOTDIR):
            raise LaunchError(EXIT_NOT_FOUND, f"{name}: command not found")
        if number in (errno.EACCES, errno.EPERM):
            raise LaunchError(EXIT_NOT_EXECUTABLE, f"{name}: permission denied (not executable)")
        raise LaunchError(EXIT_NOT_EXECUTABLE, f"{name}: cannot execute: {os.strerror(number)}")
    raise LaunchError(EXIT_FAILURE, f"cannot start {argv[0]}: {stage}: {os.strerror(number)}")


def _child(argv: Sequence[str], env: Mapping[str, str], parent: int, err_w: int,
           new_group: bool, tty_fd: int | None, death_signal: int, ignored: frozenset[int],
           mask: frozenset[int]) -> None:  # pragma: no cover - runs in the child
    stage = "setup"
    try:
        sig.set_wakeup_fd(-1)
        if new_group:
            stage = "setpgid"
            os.setpgid(0, 0)
        if tty_fd is not None:
            stage = "tcsetpgrp"
            try:  # SIGTTOU is blocked: a background group may take the terminal
                os.tcsetpgrp(tty_fd, os.getpgrp())
            except OSError:
                pass  # not our terminal after all: run without it, as before
        # exec resets caught signals to their default by itself; what it keeps are the
        # ignored ones (so re-ignore those we were given) and pending ones, which must
        # meet their final disposition, not our handler, when the mask opens.
        for signum in ignored:
            sig.signal(signum, sig.SIG_IGN)
        for signum in sig.sigpending():
            if signum not in ignored:
                sig.signal(signum, sig.SIG_DFL)
        if death_signal:
            stage = "prctl"
            from quiesce._proc import _platform  # already imported by the parent

            _platform.set_parent_death_signal(death_signal)
            if os.getppid() != parent:
                os._exit(EXIT_FAILURE)  # the supervisor died before the call took
        sig.pthread_sigmask(sig.SIG_SETMASK, mask)
        stage = "exec"
        _exec(argv, env)
    except OSError as exc:
        try:
            os.write(err_w, f"{stage}:{exc.errno or 0}".encode())
        finally:
            os._exit(EXIT_FAILURE)
    except BaseException:
        os._exit(EXIT_FAILURE)


def _exec(argv: Sequence[str], env: Mapping[str, str]) -> None:  # pragma: no cover
    """execvpe, searching the command's own PATH, as a shell would.

    Not ``os.execvpe``: it imports and enters ``warnings`` machinery per call.
    Raises the first error that is not "no such file" (EACCES says more than a
    later ENOENT), else ENOENT.
    """
    name, args, environ = argv[0], list(argv), dict(env)
    if "/" in name:
        os.execve(name, args, environ)
    first: OSError | None = None
    for directory in environ.get("PATH", os.defpath).split(os.pathsep):
        try:
            os.execve(os.path.join(directory or ".", name), args, environ)
        except OSError as exc:
            if first is None and exc.errno not in (errno.ENOENT, errno.ENOTDIR):
                first = exc
    raise first or FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), name)


def _read_all(fd: int) -> bytes:
    data = b""
    while chunk := os.read(fd, 512):
        data += chunk
    return data
