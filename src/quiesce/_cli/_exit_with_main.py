"""``quiesce run --exit-with-main``: end a Python program when its main code ends.

The command must be ``python [FLAGS] SCRIPT ...`` or ``python [FLAGS] -m
MODULE ...`` (the doctor's rules); it becomes ``python [FLAGS]
.../_exit_agent.py --grace G --kill-after K --signal N ...``, so the program
runs unchanged as ``__main__`` while the agent (stdlib only, any
interpreter) ends what main leaves running; the rest is ``quiesce run``
as usual: the supervisor forwards signals, reaps, applies ``--timeout``
and ends whatever is left once the program exits.

Rejected: ending the leftovers from the supervisor (it cannot see threads,
cannot tell when main's code returned, and cannot run ``atexit`` in the
program); ``sitecustomize`` or ``PYTHONSTARTUP`` injection (the first is
global to an installation, the second ignored for scripts).
"""

from __future__ import annotations

import os
import signal
from collections.abc import Sequence

from quiesce._cli._diagnose import python_command

AGENT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_exit_agent.py")


def agent_command(command: Sequence[str], *, grace: float, kill_after: float,
                  stop_signal: int = signal.SIGTERM) -> list[str]:
    """The program's command line, rewritten to run under the exit agent.

    ``grace``: seconds after main's code ended before threads get ``Stopped``
    and the job's processes ``stop_signal`` (0: none); ``kill_after``: seconds after that
    before SIGKILL and the exit. Raises ValueError if ``command`` is not a
    Python script or module command line.
    """
    interpreter, flags, target = python_command(command, "--exit-with-main")
    return [interpreter, *flags, AGENT, "--grace", repr(grace), "--kill-after",
            repr(kill_after), "--signal", str(int(stop_signal)), *target]
