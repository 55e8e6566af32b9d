"""run_command(): ``subprocess.run`` that ends the whole tree and never hangs on pipes.

``subprocess.run(timeout=...)`` kills only the direct child and then
waits for EOF on the pipes, which a grandchild (``cmd &`` in a shell, a
daemon) may hold for ever. Here the command runs in its own process group
with a tag (see _command), and one loop reads the pipes while watching the
exit, the deadline and the caller's token:

* the command exits: what remains of its tree gets SIGTERM, SIGKILL after
  ``grace`` (nothing it started outlives it, as with ``scope.popen``);
* the deadline passes or the token stops: SIGTERM to the whole tree,
  SIGKILL after ``grace``, then ``TimeoutExpired`` (or ``Stopped``);
* once the tree is dead, pipes still open (held by a process outside the
  tree) are drained for ``DRAIN_SECONDS`` and then closed.

The command's life is one ``ProcessHandle`` (_proc/_handle): nothing is
signalled by a number that could have been recycled.
"""

from __future__ import annotations

import locale
import os
import selectors
import signal
import subprocess
import threading
import time
from typing import Any

from quiesce._core import _validate
from quiesce._core._context import current_token
from quiesce._core._errors import Stopped
from quiesce._core._main_wait import SLICE
from quiesce._proc import _command, _proctree
from quiesce._proc._handle import ProcessHandle

DRAIN_SECONDS = 0.5
POLL = 0.05  # without a pidfd: how often to check for the exit
_CHUNK = 65536


def run_command(argv: _command.Argv, *, timeout: float | None = None, grace: float = 5.0,
                input: str | bytes | None = None, capture_output: bool = False,
                check: bool = False, **subprocess_kw: Any) -> subprocess.CompletedProcess[Any]:
    """Like `subprocess.run`, but a timeout ends the whole tree and pipes never hang it.

    The command runs in its own process group, tagged so that descendants
    that `setsid` or double-fork are found too. One loop reads the pipes
    while watching the exit, the deadline and `current_token()`:

    - when the command exits, whatever it left running gets SIGTERM, then
      SIGKILL after `grace`, and the call returns; pipes still held open by
      a process outside the tree are drained for half a second, then
      dropped (`subprocess.run` would wait for them for ever);
    - on the timeout, or a stop of the current token, the whole tree gets
      SIGTERM, then SIGKILL after `grace`: `TimeoutExpired` is raised about
      `timeout + grace` seconds after the start at the latest.

    Args:
        argv: The command, as for `subprocess.run`.
        timeout: Seconds before the tree is ended; None: no limit.
        grace: Seconds between SIGTERM and SIGKILL; finite, >= 0.
        input: Data for the command's stdin (str only with `text=True`).
        capture_output: Capture stdout and stderr, as `subprocess.run`.
        check: Raise `CalledProcessError` on a non-zero exit status.
        **subprocess_kw: Other `subprocess.Popen` arguments (`stdout`,
            `cwd`, `env`, `text`, `encoding`...); `preexec_fn` is refused.

    Returns:
        A `subprocess.CompletedProcess`.

    Raises:
        subprocess.TimeoutExpired: The timeout passed (with the output so far).
        subprocess.CalledProcessError: `check=True` and the status is not 0.
        Stopped: The current token was stopped meanwhile.
        FileNotFoundError: The command does not exist (the message names it).
        PermissionError: The command is not executable.
        ValueError: A bad duration; `input` with `stdin`; `capture_output`
            with `stdout`/`stderr`; `preexec_fn`; an empty `argv`.
        TypeError: `input` is a str without `text=True`; a bad `argv`.

    Example:
        ```python
        import quiesce

        # `subprocess.run` would hang here: the background sleep holds stdout.
        done = quiesce.run_command(["bash", "-c", "sleep 600 & echo started"],
                                   capture_output=True, text=True, timeout=10)
        print(done.stdout)                 # started (at once); the sleep is gone
        ```
    """
    timeout = _validate.seconds("timeout", timeout, allow_none=True)
    grace = _validate.required_seconds("grace", grace)
    kw = dict(subprocess_kw)
    if input is not None:
        if kw.get("stdin") is not None:
            raise ValueError("run_command: stdin and input arguments may not both be used")
        kw["stdin"] = subprocess.PIPE
    if capture_output:
        if kw.get("stdout") is not None or kw.get("stderr") is not None:
            raise ValueError("run_command: stdout and stderr arguments may not be used "
                             "with capture_output")
        kw["stdout"] = kw["stderr"] = subprocess.PIPE
    encoding, errors = kw.pop("encoding", None), kw.pop("errors", None)
    text = bool(kw.pop("text", None) or kw.pop("universal_newlines", None) or encoding or errors)
    if text:
        encoding = encoding or locale.getpreferredencoding(False)
    if isinstance(input, str):
        if not text:
            raise TypeError("run_command: input must be bytes unless text=True")
        input = input.encode(encoding or "utf-8", errors or "strict")

    handle, proc = ProcessHandle.start_command("run_command", argv, _proctree.new_tag(), kw)
    session = _Session(proc, handle, grace)
    try:
        out, err = session.communicate(input, timeout)
    finally:
        session.end()
    stdout: bytes | str | None = out
    stderr: bytes | str | None = err
    if text:
        stdout, stderr = _decode(out, encoding, errors), _decode(err, encoding, errors)
    if session.timed_out:
        raise subprocess.TimeoutExpired(argv, timeout or 0.0, output=stdout, stderr=stderr)
    if session.stopped_by is not None:
        raise Stopped(session.stopped_by)
    result = subprocess.CompletedProcess(argv, proc.returncode, stdout, stderr)
    if check:
        result.check_returncode()
    return result


def _decode(data: bytes | None, encoding: str | None, errors: str | None) -> str | None:
    if data is None:
        return None
    text = data.decode(encoding or "utf-8", errors or "strict")
    return text.replace("\r\n", "\n").replace("\r", "\n")


class _Session:
    """One command's run: the read/write loop and the ladder on its tree."""

    def __init__(self, proc: subprocess.Popen[Any], handle: ProcessHandle, grace: float) -> None:
        self.proc = proc
        self.handle = handle
        self.grace = grace
        self.timed_out = False
        self.stopped_by: str | None = None
        self.kill_at: float | None = None  # set once the tree got SIGTERM
        self.killed = False

    def communicate(self, data: bytes | None, timeout: float | None) -> tuple[bytes | None,
                                                                               bytes | None]:
        proc = self.proc
        deadline = None if timeout is None else time.monotonic() + timeout
        token = current_token()
        sel = selectors.DefaultSelector()
        chunks: dict[int, list[bytes]] = {}
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                chunks[stream.fileno()] = []
                sel.register(stream.fileno(), selectors.EVENT_READ, "read")
        pending = memoryview(data or b"")
        if proc.stdin is not None:
            if pending:
                os.set_blocking(proc.stdin.fileno(), False)
                sel.register(proc.stdin.fileno(), selectors.EVENT_WRITE, "write")
            else:
                proc.stdin.close()
        have_pidfd = self.handle.has_pidfd
        if have_pidfd:
            sel.register(self.handle.exit_fd, selectors.EVENT_READ, "exit")
        sel.register(token.fileno(), selectors.EVENT_READ, "token")
        drain_until: float | None = None
        try:
            while True:
                now = time.monotonic()
                exited = proc.poll() is not None
                if not exited and deadline is not None and now >= deadline:
                    self.timed_out = True
                    self._terminate_tree()
                if exited and self.kill_at is None and not self.killed:
                    self._terminate_tree(include_root=False)
                if self.kill_at is not None and not self.killed and now >= self.kill_at:
                    self._kill_tree()
                tree_done = exited and (self.killed or not self._remains())
                streams = [k for k in sel.get_map().values() if k.data in ("read", "write")]
                if tree_done and not streams:
                    break
                if tree_done and drain_until is None:
                    drain_until = now + DRAIN_SECONDS
                if drain_until is not None and now >= drain_until:
                    break  # a process outside the tree holds a pipe: stop reading
                for key, _ in sel.select(self._wait_time(now, deadline, drain_until, exited,
                                                         have_pidfd)):
                    if key.data == "exit":
                        sel.unregister(key.fd)
                    elif key.data == "token":
                        sel.unregister(key.fd)
                        if not exited:
                            self.stopped_by = token.reason or "stopped"
                            self._terminate_tree()
                    elif key.data == "write":
                        pending = self._write(sel, key, pending)
                    else:
                        chunk = os.read(key.fd, _CHUNK)
                        if chunk:
                            chunks[key.fd].append(chunk)
                        else:
                            sel.unregister(key.fd)
        finally:
            sel.close()
        results: list[bytes | None] = []
        for stream in (proc.stdout, proc.stderr):
            if stream is None:
                results.append(None)
            else:
                results.append(b"".join(chunks[stream.fileno()]))
        return results[0], results[1]

    def end(self) -> None:
        """Whatever happened (even KeyboardInterrupt): nothing of the tree survives."""
        if self.proc.poll() is None or self._remains():
            self._kill_tree()
        self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass
        self.handle.close()

    def _wait_time(self, now: float, deadline: float | None, drain_until: float | None,
                   exited: bool, have_pidfd: bool) -> float:
        wake = [t for t in (deadline, drain_until, self.kill_at) if t is not None]
        wait = min(min(wake) - now, 3600.0) if wake else 3600.0  # epoll overflows at ~24 days
        if not have_pidfd or exited:
            wait = min(wait, POLL)  # the tree is watched by polling /proc
        if threading.current_thread() is threading.main_thread():
            wait = min(wait, SLICE)  # let a signal handler run (see _main_wait)
        return max(0.0, wait)

    def _write(self, sel: selectors.BaseSelector, key: selectors.SelectorKey,
               pending: memoryview) -> memoryview:
        try:
            n = os.write(key.fd, pending[:_CHUNK])
            pending = pending[n:]
        except BlockingIOError:
            return pending
        except BrokenPipeError:
            pending = pending[:0]
        if not pending:
            sel.unregister(key.fd)
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        return pending

    def _remains(self) -> bool:
        return bool(self.handle.remains())

    def _terminate_tree(self, include_root: bool = True) -> None:
        if self.kill_at is not None:
            return
        self.kill_at = time.monotonic() + self.grace
        if include_root:
            self.handle.signal_group(signal.SIGTERM)  # by number only while provably ours
        self.handle.signal_tree(signal.SIGTERM, include_root=False)

    def _kill_tree(self) -> None:
        self.killed = True
        self.handle.kill_tree()  # stopped, members killed, then the command itself
