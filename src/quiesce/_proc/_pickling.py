"""Pickling a call for a child process up front, with an error that names it.

Whatever the start method, a process target is pickled when it is handed to
quiesce, so a lambda fails at the call that named it (``scope.process``,
``ProcessPool.submit``) rather than deep inside multiprocessing, or, under
fork, never. The caller passes its own public name for the message.

``pickle_call`` (``scope.process``) leaves the StopTokens among the
arguments out of the bytes: they travel beside them, as arguments of the
``multiprocessing.Process`` itself, and ``loads_call`` in the child puts
them back in place. A token carries two fds (its shared memory and its
eventfd). Pickled with the rest, up front, outside ``Process.start()``,
they could only go through multiprocessing's resource sharer: a thread in
the owner, and per fd a connection from the child with an HMAC handshake,
which made the child import hmac, hashlib and OpenSSL (and the kernel
unmap them again at its exit). As arguments of the Process they go the
start method's own way: inherited under fork, passed with the other fds
under forkserver (spawn: see ``pickle_call``). Tokens are picked out by
``reducer_override``, not ``persistent_id``: it is not called for ints,
strings, lists, dicts and the like, so big arguments pickle at nearly full
speed. ``pickle_target`` (the pools: a task is sent after its worker
started) pickles everything.
"""

from __future__ import annotations

import io
import pickle
from collections.abc import Callable
from typing import Any

from quiesce._core._token import StopToken


def pickle_target(caller: str, fn: Callable[..., Any], args: tuple[Any, ...],
                  kwargs: dict[str, Any]) -> bytes:
    """Pickle ``(fn, args, kwargs)``, or raise TypeError naming ``caller``, the target and why."""
    try:
        return pickle.dumps((fn, args, kwargs))
    except Exception as exc:
        raise _error(caller, fn, exc) from exc


def pickle_call(caller: str, fn: Callable[..., Any], args: tuple[Any, ...],
                kwargs: dict[str, Any], start_method: str) -> tuple[bytes, list[StopToken]]:
    """Pickle ``(fn, args, kwargs)`` but its StopTokens, which are returned beside the
    bytes (see the module note); ``loads_call`` joins them again.

    Not under ``spawn``: its Popen hands each fd of the Process's arguments to
    the child once per mention, and tokens share their shared-memory fd, so
    two tokens there fail the start ("bad value(s) in fds_to_keep"). A spawned
    child imports everything afresh anyway; its tokens stay in the bytes.

    Raises TypeError naming ``caller``, the target and why, as ``pickle_target``.
    """
    if start_method == "spawn":
        return pickle_target(caller, fn, args, kwargs), []
    pickler = _TokensApart()
    try:
        return pickler.dump_call((fn, args, kwargs)), pickler.tokens
    except Exception as exc:
        raise _error(caller, fn, exc) from exc


def loads_call(payload: bytes, tokens: list[StopToken]) -> Any:
    """In the child: ``pickle_call``'s bytes, with its tokens back in place."""
    global _incoming
    _incoming = tokens
    try:
        return pickle.loads(payload)
    finally:
        _incoming = []


class _TokensApart(pickle.Pickler):
    def __init__(self) -> None:
        self._buffer = io.BytesIO()
        super().__init__(self._buffer, pickle.DEFAULT_PROTOCOL)
        self.tokens: list[StopToken] = []
        self._index: dict[int, int] = {}

    def dump_call(self, call: tuple[Any, ...]) -> bytes:
        self.dump(call)
        return self._buffer.getvalue()

    def reducer_override(self, obj: Any) -> Any:
        if type(obj) is not StopToken:
            return NotImplemented
        index = self._index.get(id(obj))
        if index is None:
            index = self._index[id(obj)] = len(self.tokens)
            self.tokens.append(obj)
        return (_token_at, (index,))


_incoming: list[StopToken] = []


def _token_at(index: int) -> StopToken:
    return _incoming[index]


def _error(caller: str, fn: Callable[..., Any], exc: Exception) -> TypeError:
    name = getattr(fn, "__qualname__", None) or repr(fn)
    hint = ""
    if "<lambda>" in name or "<locals>" in name:
        hint = "; define it at module level (lambdas and nested functions cannot be pickled)"
    return TypeError(
        f"{caller}: cannot send target {name!r} and its arguments to a child "
        f"process: {type(exc).__name__}: {exc}{hint}"
    )
