"""Signals on the command line: names, numbers and the set ``quiesce run`` catches.

Design note
-----------
The CLI reads signals through the ``_signal`` extension module, the C half
of :mod:`signal`, not :mod:`signal` itself: importing :mod:`signal` imports
:mod:`enum` to build ``signal.Signals``, about a third of an interpreter's
own start-up, and ``quiesce run -- true`` must start within 1.5x of
``python -c pass``. The functions and constants are the same objects
(``signal`` re-exports them); only the enum wrappers are missing, so numbers
are plain ints here. Type checkers see :mod:`signal` (``TYPE_CHECKING``).

Rejected: a hand-written table of numbers (differs between platforms; the
C module knows them); ``os.strsignal`` style descriptions ("Terminated")
instead of names (users write TERM, tini and dumb-init print numbers).
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    import signal as sig
else:
    import _signal as sig

__all__ = ["CATCHABLE", "JOB_CONTROL", "name", "parse_signal", "sig"]

# Aliases that would otherwise shadow the usual name of the same number.
_ALIASES = {"SIGCLD", "SIGIOT", "SIGPOLL"}
_NUMBERS: dict[str, int] = {
    key: int(value) for key, value in vars(sig).items()
    if key.startswith("SIG") and not key.startswith("SIG_") and isinstance(value, int)
}
_NAMES: dict[int, str] = {
    number: key for key, number in _NUMBERS.items()
    if key not in _ALIASES and key not in ("SIGRTMIN", "SIGRTMAX")
}

# Every signal a process may catch: the supervisor forwards all of them.
CATCHABLE: tuple[int, ...] = tuple(sorted(
    int(n) for n in sig.valid_signals() if n not in (sig.SIGKILL, sig.SIGSTOP)))
# Terminal job control: forwarded (as SIGSTOP to a group), then the supervisor stops too.
JOB_CONTROL = frozenset({int(sig.SIGTSTP), int(sig.SIGTTIN), int(sig.SIGTTOU)})


def name(number: int) -> str:
    """``SIGTERM`` for 15, ``SIGRTMIN+2`` for a real-time signal, ``0`` for 0."""
    if number in _NAMES:
        return _NAMES[number]
    rtmin = _NUMBERS.get("SIGRTMIN")
    if rtmin is not None and number >= rtmin:
        return f"SIGRTMIN+{number - rtmin}" if number > rtmin else "SIGRTMIN"
    return str(number)


def parse_signal(option: str, text: str, *, allow_zero: bool = True) -> int:
    """A signal number from ``TERM``, ``SIGTERM``, ``term``, ``15``, ``RTMIN+2`` or ``0``.

    Raises ``ValueError`` naming ``option`` and the bad text.
    """
    key = text.strip().upper()
    if key.isdigit():
        number = int(key)
        if number == 0 and allow_zero:
            return 0
        if number in CATCHABLE or number in (sig.SIGKILL, sig.SIGSTOP):
            return number
        raise ValueError(f"{option}: {text!r} is not a signal number on this platform")
    if not key.startswith("SIG"):
        key = "SIG" + key
    base, plus, offset = key.partition("+")
    if base in _NUMBERS and (not plus or offset.isdigit()):
        number = _NUMBERS[base] + (int(offset) if plus else 0)
        if number in CATCHABLE or number in (sig.SIGKILL, sig.SIGSTOP):
            return number
    raise ValueError(f"{option}: unknown signal {text!r} (e.g. TERM, INT, HUP, 15)")
