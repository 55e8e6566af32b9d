"""Raise ``Stopped`` inside another thread (``Scope(interrupt_threads=True)``).

Python cannot kill a thread. ``PyThreadState_SetAsyncExc`` is the one way to
make another thread raise: the exception surfaces at the thread's next
bytecode boundary, so it reaches pure-Python loops and, since quiesce's own
waits poll in short C calls, code sleeping on a token; it cannot break a
thread blocked for good in a C call (``time.sleep(1e6)``, a socket read
without timeout). Such a thread is reported *abandoned*.

The exception must only land while the thread runs the user's target, never
inside quiesce's own bookkeeping around it. ``ThreadGate`` arms the gate
while the target runs; ``interrupt`` fires only through an armed gate.
An exception fired just as the target returns is still pending at
``disarm``: disarm lets it land right there, in a short loop of its own
that catches it (the interpreter checks for it at every backward jump), so
it cannot surface later in quiesce's code.

Rejected: ``signal.pthread_kill`` (Python runs signal handlers only in the
main thread); ``ctypes`` tricks that terminate the OS thread (they leak
locks the thread held and corrupt the interpreter); clearing the pending
exception with ``PyThreadState_SetAsyncExc(ident, NULL)``. On Python 3.11
that call raises the interpreter's "async exception pending" flag with no
exception behind it, and nothing ever lowers it again: the eval breaker
stays set for good, and under any tracer (coverage, a debugger,
``sys.settrace``) every thread then spins at function entry for ever.
"""

from __future__ import annotations

import ctypes
import threading

_set_async_exc = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.c_ulong, ctypes.py_object)(
    ("PyThreadState_SetAsyncExc", ctypes.pythonapi)
)
# Enough backward jumps for a pending asynchronous exception to land (it is
# checked at each one); ~50 us when nothing is pending.
_DRAIN_LOOPS = 2000


class ThreadGate:
    """Guards one worker thread against exceptions outside its target."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ident: int | None = None
        self._fired: type[BaseException] | None = None
        self.interrupted = False

    def arm(self) -> None:
        with self._lock:
            self._ident = threading.get_ident()

    def disarm(self) -> None:
        """Close the gate; an interrupt fired but not landed yet lands (and is caught) here.

        Call from the armed thread itself. The exception may also land just
        before the drain loop, anywhere in this method: callers treat an
        ``interrupt`` type escaping from here as the interrupt it is.
        """
        with self._lock:
            self._ident = None
            fired, self._fired = self._fired, None
        if fired is None:
            return
        try:
            for _ in range(_DRAIN_LOOPS):
                pass
        except fired:
            pass

    def interrupt(self, exc_type: type[BaseException]) -> bool:
        """Raise ``exc_type`` in the armed thread; False if it is not in its target."""
        with self._lock:
            if self._ident is None:
                return False
            self.interrupted = True
            if int(_set_async_exc(self._ident, exc_type)) != 1:
                return False
            self._fired = exc_type
            return True
