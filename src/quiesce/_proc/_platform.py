"""Thin wrappers over the Linux process-control calls quiesce relies on.

Each returns False (or None) where the platform lacks the call, so callers
fall back to the portable mechanism instead of failing: PR_SET_PDEATHSIG and
PR_SET_CHILD_SUBREAPER are Linux-only, pidfd needs Linux 5.3+.
"""

from __future__ import annotations

import ctypes
import os
import sys

IS_LINUX = sys.platform.startswith("linux")

_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36

_libc: ctypes.CDLL | None = None


def _prctl(option: int, arg: int) -> bool:
    global _libc
    if not IS_LINUX:
        return False
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    return int(_libc.prctl(option, arg, 0, 0, 0)) == 0


def set_parent_death_signal(signum: int) -> bool:
    """Ask the kernel to send ``signum`` to this process when its parent thread exits."""
    return _prctl(_PR_SET_PDEATHSIG, signum)


def set_child_subreaper() -> bool:
    """Make orphaned descendants re-parent to this process instead of init."""
    return _prctl(_PR_SET_CHILD_SUBREAPER, 1)


def pidfd_open(pid: int) -> int | None:
    """A pidfd for ``pid`` (immune to PID reuse), or None where unsupported or gone."""
    opener = getattr(os, "pidfd_open", None)
    if opener is None:
        return None
    try:
        return int(opener(pid))
    except (OSError, ValueError):
        return None
