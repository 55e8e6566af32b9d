"""Starting a command so that its whole tree can be found and ended.

Shared by ``scope.popen`` and ``run_command``: argument checks with clear
errors, the command in a process group of its own (the ladder signals the
group without touching us), the worker's tag in its environment (found
again after ``setsid``), and the guardian told about the group (killed if
we are SIGKILLed).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from typing import Any

from quiesce._proc import _proctree
from quiesce._proc._guardian_client import Guardian

Argv = str | bytes | os.PathLike[str] | Sequence[str | bytes | os.PathLike[str]]


def check_argv(caller: str, argv: object) -> None:
    """Raise a TypeError/ValueError naming ``argv`` and what is wrong with it."""
    if isinstance(argv, str | bytes | os.PathLike):
        if not os.fspath(argv):
            raise ValueError(f"{caller}: argv is empty")
        return
    if not isinstance(argv, Sequence):
        raise TypeError(f"{caller}: argv must be a command line (a list of strings, or a "
                        f"string), not {type(argv).__name__}")
    if not argv:
        raise ValueError(f"{caller}: argv is empty; give the command to run")
    for i, arg in enumerate(argv):
        if not isinstance(arg, str | bytes | os.PathLike):
            raise TypeError(f"{caller}: argv[{i}] must be a string or path, not "
                            f"{type(arg).__name__} {arg!r}")


def signal_group(pgid: int, sig: int) -> None:
    """Signal a command's process group; nothing if it is already empty (or not ours).

    Callers make sure the leader is not yet reaped, so ``pgid`` is still theirs.
    """
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def command_name(argv: Argv) -> str:
    first = argv if isinstance(argv, str | bytes | os.PathLike) else argv[0]
    name = os.fspath(first)
    return name.decode(errors="replace") if isinstance(name, bytes) else name


def start(caller: str, argv: Argv, tag: str, kwargs: dict[str, Any]) -> subprocess.Popen[Any]:
    """Popen in its own process group, tagged and watched by the guardian."""
    proc = popen(caller, argv, tag, kwargs)
    Guardian.get().watch_group(proc.pid)
    return proc


def popen(caller: str, argv: Argv, tag: str, kwargs: dict[str, Any]) -> subprocess.Popen[Any]:
    """Popen in its own process group, tagged (the caller registers it with the guardian)."""
    for forbidden in ("preexec_fn",):
        if kwargs.get(forbidden) is not None:
            raise ValueError(f"{caller}: {forbidden} is not supported (it is unsafe with "
                             "threads); quiesce sets up the process group itself")
    check_argv(caller, argv)
    kwargs = dict(kwargs)
    kwargs["env"] = _proctree.env_with_tag(tag, kwargs.get("env"))
    if not kwargs.get("start_new_session") and kwargs.get("process_group") is None:
        kwargs["process_group"] = 0
    try:
        proc: subprocess.Popen[Any] = subprocess.Popen(argv, **kwargs)
    except FileNotFoundError as exc:
        name = command_name(argv)
        where = f" (cwd {kwargs['cwd']!r})" if kwargs.get("cwd") else ""
        raise FileNotFoundError(exc.errno, f"{caller}: command {name!r} not found{where}",
                                exc.filename) from None
    except PermissionError as exc:
        raise PermissionError(exc.errno, f"{caller}: command {command_name(argv)!r} is not "
                              "executable", exc.filename) from None
    return proc
