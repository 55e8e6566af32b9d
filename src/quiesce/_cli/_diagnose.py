"""``quiesce doctor``: run a Python program under the agent, supervised like ``quiesce run``.

The command must be ``python [FLAGS] SCRIPT ...`` or ``python [FLAGS] -m
MODULE ...``; it becomes ``python [FLAGS] .../_diagnose_agent.py ...``, so
the program runs unchanged as ``__main__`` while the agent (stdlib only,
any interpreter) watches what happens after it ends.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Sequence

from quiesce._cli import _supervise

AGENT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_diagnose_agent.py")
_PYTHON = re.compile(r"python[0-9.]*$")
_FLAGS_WITH_VALUE = {"-X", "-W"}
_BARE_FLAGS = {"-b", "-bb", "-B", "-d", "-E", "-I", "-O", "-OO", "-P", "-q", "-R", "-s", "-S",
               "-u", "-v"}


def python_command(command: Sequence[str], who: str) -> tuple[str, list[str], list[str]]:
    """``(interpreter, flags, target)`` of ``python [FLAGS] SCRIPT|-m MODULE [ARG...]``.

    Raises ValueError, starting with ``who``, if ``command`` is not such a command.
    """
    if not command or not (_PYTHON.match(os.path.basename(command[0]))
                           or command[0] == sys.executable):
        raise ValueError(f"{who}: the command must be a Python interpreter followed by a "
                         f"script or -m MODULE, e.g. `python app.py`; got {list(command)!r}")
    interpreter, rest = command[0], list(command[1:])
    flags: list[str] = []
    while rest and rest[0].startswith("-") and rest[0] != "-m":
        flag = rest.pop(0)
        if flag in _FLAGS_WITH_VALUE and rest:
            flags += [flag, rest.pop(0)]
        elif flag in _BARE_FLAGS or flag[:2] in _FLAGS_WITH_VALUE:
            flags.append(flag)
        else:
            raise ValueError(f"{who}: interpreter option {flag!r} is not supported; "
                             "run `python SCRIPT ...` or `python -m MODULE ...`")
    if not rest or (rest[0] == "-m" and len(rest) < 2):
        raise ValueError(f"{who}: give the script (or -m MODULE) to run")
    return interpreter, flags, rest


def agent_command(command: Sequence[str], after: float, every: float) -> list[str]:
    """The program's command line, rewritten to run under the agent; ValueError if not Python."""
    interpreter, flags, target = python_command(command, "doctor")
    return [interpreter, *flags, AGENT, "--after", str(after), "--every", str(every), *target]


def doctor(command: Sequence[str], options: _supervise.Options, *, after: float,
           every: float) -> int:
    return _supervise.supervise(agent_command(command, after, every), options)
