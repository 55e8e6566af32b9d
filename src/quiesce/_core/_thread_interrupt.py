"""Raise ``Stopped`` inside another thread (``Scope(interrupt_threads=True)``).

Python cannot kill a thread. ``PyThreadState_SetAsyncExc`` is the one way to
make another thread raise: the exception surfaces at the thread's next
bytecode boundary, so it reaches pure-Python loops and, since quiesce's own
waits poll in short C calls, code sleeping on a token; it cannot break a
thread blocked for good in a C call (``time.sleep(1e6)``, a socket read
without timeout). Such a thread is reported *abandoned*.

The exception must only land while the thread runs the user's target, never
inside quiesce's own bookkeeping around it. ``ThreadGate`` arms the gate
while the target runs; ``interrupt`` fires only through an armed gate, and
``disarm`` clears any exception still pending when the target returns
(``SetAsyncExc`` with NULL), all under one lock.

Rejected: ``signal.pthread_kill`` (Python runs signal handlers only in the
main thread) and ``ctypes`` tricks that terminate the OS thread (they leak
locks the thread held and corrupt the interpreter).
"""

from __future__ import annotations

import ctypes
import threading

_set_async_exc = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.c_ulong, ctypes.py_object)(
    ("PyThreadState_SetAsyncExc", ctypes.pythonapi)
)
_clear_async_exc = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p)(
    ("PyThreadState_SetAsyncExc", ctypes.pythonapi)
)


class ThreadGate:
    """Guards one worker thread against exceptions outside its target."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ident: int | None = None
        self.interrupted = False

    def arm(self) -> None:
        with self._lock:
            self._ident = threading.get_ident()

    def disarm(self) -> None:
        with self._lock:
            if self._ident is not None and self.interrupted:
                _clear_async_exc(self._ident, None)
            self._ident = None

    def interrupt(self, exc_type: type[BaseException]) -> bool:
        """Raise ``exc_type`` in the armed thread; False if it is not in its target."""
        with self._lock:
            if self._ident is None:
                return False
            self.interrupted = True
            return int(_set_async_exc(self._ident, exc_type)) == 1

