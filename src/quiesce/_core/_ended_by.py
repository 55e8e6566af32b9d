"""How a worker, pool task or pool ended: one vocabulary for every layer.

It lives in the core so that pools (which record how their tasks had to end)
and scopes (which report it) share it without the pools importing upward.
"""

from typing import Literal

EndedBy = Literal["finished", "failed", "stopped", "terminated", "killed", "abandoned"]
"""``finished``: returned, never asked to stop; ``failed``: raised (or died);
``stopped``: ended cooperatively after its token was stopped; ``terminated``:
ended by the ladder's second step (SIGTERM, or ``Stopped`` raised in a thread);
``killed``: ended by SIGKILL; ``abandoned``: a thread still running after the
ladder."""
