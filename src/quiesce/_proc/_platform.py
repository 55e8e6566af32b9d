"""Thin wrappers over the Linux process-control calls quiesce relies on.

Each returns False (or None) where the platform lacks the call, so callers
fall back to the portable mechanism instead of failing: PR_SET_PDEATHSIG and
PR_SET_CHILD_SUBREAPER are Linux-only, pidfd needs Linux 5.3+.
"""

from __future__ import annotations

import os
import sys

IS_LINUX = sys.platform.startswith("linux")

_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36
_PR_GET_CHILD_SUBREAPER = 37

_prctl_address: int | None = None


def _call_prctl(args: tuple[object, ...]) -> int:
    """``prctl(*args)`` through ``_ctypes.call_function`` (the C half of ctypes, CPython
    3.6 to 3.13 at least), without importing ``ctypes``, whose import alone is a quarter
    of ``quiesce run``'s start-up budget. Raises ImportError, AttributeError or OSError
    where that half is missing or changed."""
    global _prctl_address
    import _ctypes

    if _prctl_address is None:
        _prctl_address = int(_ctypes.dlsym(_ctypes.dlopen(None), "prctl"))  # type: ignore[arg-type]
    return int(_ctypes.call_function(_prctl_address, args))


def _prctl(option: int, arg: int) -> bool:
    # Plain ctypes where ``_call_prctl`` cannot work.
    if not IS_LINUX:
        return False
    try:
        return _call_prctl((option, arg, 0, 0, 0)) == 0
    except (ImportError, AttributeError, OSError):
        import ctypes

        return int(ctypes.CDLL(None).prctl(option, arg, 0, 0, 0)) == 0


def is_child_subreaper() -> bool | None:
    """Whether this process is a child subreaper; None where that cannot be asked.

    PR_GET_CHILD_SUBREAPER writes an int through a pointer: a fresh bytes
    object serves as the buffer (``_ctypes`` passes its data as ``char *``),
    so no ``ctypes`` import, which in a background thread could hold the
    module's import lock across another thread's fork.
    """
    if not IS_LINUX:
        return None
    try:
        buffer = bytes(8)  # never shared: bytes of this size are not cached
        if _call_prctl((_PR_GET_CHILD_SUBREAPER, buffer, 0, 0, 0)) != 0:
            return None
        return int.from_bytes(buffer[:4], sys.byteorder) != 0
    except (ImportError, AttributeError, OSError):
        return None


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
