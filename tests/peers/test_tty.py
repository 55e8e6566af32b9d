"""Terminal tests of dumb-init (``tests/tty_test.py``) and tini (``test/run_outer_tests.py``).

Each runs ``quiesce run`` as the session leader of a fresh pseudo-terminal
(``pty.fork``), as a shell or ``docker run -t`` would.
"""

from __future__ import annotations

import os
import pty
import re
import signal
import sys
import termios
import time

import psutil
import pytest
from peerkit import QUIESCE, descendants, kill_quietly

from procs import catches, descendants_running, stat_fields, wait_for

EOF_KEY = b"\x04"
INTR_KEY = b"\x03"


def ttyflags(fd: int) -> None:
    """No output processing, no echo: what is read is what the program wrote."""
    attrs = termios.tcgetattr(fd)
    attrs[1] &= ~termios.OPOST
    attrs[3] &= ~termios.ECHO
    termios.tcsetattr(fd, termios.TCSANOW, attrs)


def readall(fd: int, deadline: float) -> bytes:
    """Read until EOF (EIO on Linux once the last slave closes) or the deadline."""
    import select

    result = b""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.1)
        if not ready:
            continue
        try:
            chunk = os.read(fd, 1024)
        except OSError:
            return result
        if not chunk:
            return result
        result += chunk
    return result


def spawn(argv: list[str]) -> tuple[int, int]:
    pid, fd = pty.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.execv(argv[0], argv)
        finally:
            os._exit(127)
    return pid, fd


def reap(pid: int, timeout: float = 20) -> int:
    """The exit status of ``pid`` (killing its tree if it hangs)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.01)
    for child in descendants(pid):
        kill_quietly(child)
    kill_quietly(pid)
    os.waitpid(pid, 0)
    raise AssertionError("hung on the terminal")


def test_tty() -> None:
    """dumb-init tests/tty_test.py::test_tty: the command reads and writes the terminal."""
    pid, fd = spawn([*QUIESCE, "--", "tac"])
    try:
        ttyflags(fd)
        os.write(fd, b"1\n2\n3\n")
        os.write(fd, EOF_KEY * 2)
        output = readall(fd, time.monotonic() + 20)
        assert reap(pid) == 0
        assert output == b"3\n2\n1\n", output
    finally:
        os.close(fd)


@pytest.mark.parametrize("round_", range(10))
def test_child_gets_controlling_tty_if_we_had_one(round_: int) -> None:
    """dumb-init tests/tty_test.py::test_child_gets_controlling_tty_if_we_had_one.

    ``bash -m`` has job control ("m" in $-). Repeated: the terminal must be
    the command's before it runs, or bash sometimes stops itself with
    SIGTTIN at start-up (a hand-over after the exec is a race).
    """
    pid, fd = spawn([*QUIESCE, "--", "/bin/bash", "--norc", "--noprofile", "-m", "-i"])
    try:
        ttyflags(fd)
        os.write(fd, b'echo "flags are: [[$-]]"\n')
        os.write(fd, b"exit 0\n")
        output = readall(fd, time.monotonic() + 20)
        assert reap(pid) == 0, output
        match = re.search(rb"flags are: \[\[([a-zA-Z]+)\]\]", output)
        assert match, output
        assert b"m" in match.group(1)
    finally:
        os.close(fd)


def test_no_spurious_hangup_and_sighup_is_forwarded() -> None:
    """dumb-init tests/tty_test.py::test_sighup_sigcont_ignored_if_was_session_leader.

    dumb-init must swallow the SIGHUP and SIGCONT its own ``setsid`` causes
    when it hands over the terminal; quiesce keeps one session (it only moves
    the foreground group), so no such signals arise, and a real SIGHUP is
    forwarded (and a SIGCONT never is, unasked).
    """
    pid, fd = spawn([*QUIESCE, "-v", "--", "sleep", "20"])
    try:
        ttyflags(fd)
        # quiesce sets its handlers before it starts the command: once `sleep` runs,
        # a SIGHUP is quiesce's to forward (before, it would kill quiesce outright)
        wait_for(lambda: descendants_running(pid, ["sleep", "20"]), "the command to exec")
        assert catches(pid, signal.SIGHUP)
        os.kill(pid, signal.SIGHUP)
        output = readall(fd, time.monotonic() + 20).decode()
        assert reap(pid) == 128 + signal.SIGHUP
        assert re.search(r"forwarded SIGHUP to group \d+", output), output
        assert "SIGCONT" not in output, output
    finally:
        os.close(fd)


def test_shell_exits_0_on_the_terminal() -> None:
    """tini test/run_outer_tests.py::test_tty_handling (dash, attach_and_type_exit_0)."""
    pid, fd = spawn([*QUIESCE, "--", "/bin/sh"])
    try:
        ttyflags(fd)
        os.write(fd, b"exit 0\n")
        readall(fd, time.monotonic() + 20)
        assert reap(pid) == 0
    finally:
        os.close(fd)


def test_ctrl_c_on_the_terminal_ends_the_command() -> None:
    """tini test/run_outer_tests.py::test_tty_handling (a loop, attach_and_issue_ctrl_c).

    Ctrl-C goes to the terminal's foreground group, the command's: it dies
    of SIGINT and quiesce exits 130.
    """
    pid, fd = spawn([*QUIESCE, "--", "/bin/sh", "-c", "while true; do echo '#'; sleep 0.1; done"])
    try:
        ttyflags(fd)
        deadline = time.monotonic() + 20
        seen = b""
        while b"#" not in seen and time.monotonic() < deadline:
            seen += readall(fd, time.monotonic() + 0.2)
        os.write(fd, INTR_KEY)
        readall(fd, time.monotonic() + 20)
        assert reap(pid) == 128 + signal.SIGINT
    finally:
        os.close(fd)


if sys.platform != "linux":  # pragma: no cover
    pytestmark = pytest.mark.skip(reason="pseudo-terminal semantics checked on Linux")


def test_ctrl_z_makes_quiesce_a_stopped_job_of_the_shell() -> None:
    """quiesce's own (job control under an interactive shell, as dumb-init's
    shell_background_test and tini's tty tests assume): Ctrl-Z stops the command,
    quiesce stops too and the shell gets the terminal back; ``fg`` resumes both and
    hands the terminal to the command again, so Ctrl-C then reaches it."""
    pid, fd = spawn(["/bin/bash", "--norc", "--noprofile", "-i"])
    try:
        ttyflags(fd)
        deadline = time.monotonic() + 30

        def expect(needle: bytes) -> bytes:
            seen = b""
            while needle not in seen and time.monotonic() < deadline:
                seen += readall(fd, time.monotonic() + 0.1)
            assert needle in seen, seen
            return seen

        os.write(fd, " ".join([*QUIESCE, "--", "/bin/sh", "-c",
                               "'echo started; sleep 30'"]).encode() + b"\n")
        expect(b"started")
        os.write(fd, b"\x1a")  # Ctrl-Z
        expect(b"Stopped")
        os.write(fd, b"echo back-at-$((40+2))\n")
        expect(b"back-at-42")  # the shell reads the terminal again
        [supervisor] = [c for c in psutil.Process(pid).children() if "quiesce" in c.cmdline()]
        [command] = [c.pid for c in supervisor.children() if os.getpgid(c.pid) == c.pid]
        os.write(fd, b"fg\n")

        def resumed_in_the_foreground() -> bool:
            fields = stat_fields(command)  # state, ppid, pgrp, session, tty, tpgid
            return fields[0] != "T" and fields[5] == fields[2]

        wait_for(resumed_in_the_foreground, "`fg` to resume the command and give it the "
                 "terminal", timeout=10)
        os.write(fd, INTR_KEY)  # reaches the command's group: it has the terminal again
        os.write(fd, b"echo status-$?\n")
        expect(b"status-130")
        os.write(fd, b"exit 0\n")
        readall(fd, time.monotonic() + 10)
        assert reap(pid) == 0
    finally:
        os.close(fd)


def test_verbose_logging_with_tostop_does_not_stop_anything() -> None:
    """quiesce's own: with ``stty tostop`` a background write raises SIGTTOU; quiesce's
    -v lines, written while the command has the terminal, must not pass for job control."""
    # deliberate: the command holds the terminal 0.3 s while quiesce writes its -v lines
    pid, fd = spawn(["/bin/sh", "-c", f"stty tostop; exec {' '.join(QUIESCE)} -v -- "
                                      "sh -c 'sleep 0.3; exit 5'"])
    try:
        ttyflags(fd)
        output = readall(fd, time.monotonic() + 20)
        assert reap(pid) == 5, output
        assert b"exit status 5" in output
    finally:
        os.close(fd)
