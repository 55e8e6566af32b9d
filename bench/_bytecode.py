"""Compile quiesce's bytecode before a bench measures anything, as any install has it.

``pip install`` writes the ``.pyc`` files of what it installs; the standard
library ships them. An editable install writes them at the first import,
unless ``PYTHONDONTWRITEBYTECODE`` is set, as it is on some machines (ours
included). Then every process that imports quiesce compiles its modules
from source, and no stdlib baseline pays that: a forkserver or spawn child
spent ~5 ms more and held ~1.3 MB more private memory, which it also paid
to free at its exit (measured 2026-11-30, bench_limits' process rows).
``compileall`` writes the cache whatever that variable says; an import
reads it whatever that variable says.
"""

from __future__ import annotations

import compileall
import os

import quiesce


def ensure_quiesce_bytecode() -> None:
    """Write any missing or stale ``.pyc`` of the quiesce package (quietly)."""
    compileall.compile_dir(os.path.dirname(quiesce.__file__), quiet=1)
