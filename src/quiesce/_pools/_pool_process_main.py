"""The loop inside each ProcessPool worker process.

The worker runs the quiesce child bootstrap first (``prepare_child``:
PDEATHSIG, own process group, tag, SIGTERM raised as ``Stopped``,
lifeline), with the pool's token as its root. Then it serves tasks one at
a time from its task pipe and answers on the same pipe:
``("ok", id, value)``, ``("stopped", id, reason, by_sigterm)``,
``("failed", id, exception, traceback_text)``. An empty message means
"exit now": the pool's end of the pipe may live on in a sibling forked
after us, so its closing is not a reliable signal.

Each task runs with a token of its own, a local child of the pool token.
A second, one-way *control* pipe carries ``("stop", id, reason)``: a
listener thread stops the running task's token at once (or remembers the
id if the task has not started yet), so a cancel or a timeout reaches a
task blocked in ``token.wait()`` immediately. The owner's ladder follows
with SIGTERM (which raises ``Stopped`` in the task) and SIGKILL.
"""

from __future__ import annotations

import multiprocessing.connection
import pickle
import threading
import traceback
from typing import Any

from quiesce._core import _context
from quiesce._core._errors import Stopped
from quiesce._core._token import StopToken
from quiesce._proc._child import prepare_child
from quiesce._proc._wants_token import wants_token

Connection = multiprocessing.connection.Connection


class _Current:
    """The running task's id and token, shared with the control listener."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.task_id = -1
        self.token: StopToken | None = None
        self.stopped: dict[int, str] = {}  # stop requests for tasks not started yet

    def begin(self, task_id: int, token: StopToken) -> None:
        with self.lock:
            self.task_id, self.token = task_id, token
            reason = self.stopped.pop(task_id, None)
            self.stopped = {k: v for k, v in self.stopped.items() if k > task_id}
        if reason is not None:
            token.stop(reason)

    def end(self) -> None:
        with self.lock:
            self.task_id, self.token = -1, None

    def stop(self, task_id: int, reason: str) -> None:
        with self.lock:
            token = self.token if task_id == self.task_id else None
            if token is None and task_id > self.task_id:
                self.stopped[task_id] = reason
        if token is not None:
            token.stop(reason)


def worker_main(tasks: Connection, control: Connection, pool_token: StopToken, tag: str,
                owner_pid: int) -> None:
    terminated = prepare_child(pool_token, tag, owner_pid)
    current = _Current()
    threading.Thread(target=_listen, args=(control, current), daemon=True,
                     name="quiesce-pool-control").start()
    while True:
        try:
            if not _serve_one(tasks, pool_token, current, terminated):
                return
        except Stopped:
            continue  # a SIGTERM meant for a task that had just ended


def _serve_one(tasks: Connection, pool_token: StopToken, current: _Current,
               terminated: list[bool]) -> bool:
    try:
        data = tasks.recv_bytes()
    except (EOFError, OSError):
        return False  # the pool closed our pipe: shut down
    if not data:
        return False  # the pool says goodbye (EOF may never come: see say_goodbye)
    task_id, payload, deadline = pickle.loads(data)
    # Submitted in a deadline block: the task's token stops here at that absolute time.
    token = pool_token._child(StopToken._local(), deadline)
    current.begin(task_id, token)
    terminated[0] = False
    try:
        message = _run(task_id, payload, token, terminated)
    finally:
        current.end()
    _send(tasks, task_id, message)
    return True


def _run(task_id: int, payload: bytes, token: StopToken,
         terminated: list[bool]) -> tuple[Any, ...]:
    try:
        fn, args, kwargs = pickle.loads(payload)
        if wants_token(fn) and "token" not in kwargs:
            kwargs = {**kwargs, "token": token}
        with _context.using(token):
            return ("ok", task_id, fn(*args, **kwargs))
    except Stopped as exc:
        return ("stopped", task_id, exc.reason, terminated[0])
    except BaseException as exc:
        return ("failed", task_id, exc, "".join(traceback.format_exception(exc)))


def _send(tasks: Connection, task_id: int, message: tuple[Any, ...]) -> None:
    try:
        data = pickle.dumps(message)
    except Exception as exc:
        what = "result" if message[0] == "ok" else "exception"
        error = TypeError(f"the task's {what} cannot be sent back to the pool: "
                          f"{type(exc).__name__}: {exc}")
        data = pickle.dumps(("failed", task_id, error, ""))
    tasks.send_bytes(data)


def _listen(control: Connection, current: _Current) -> None:
    while True:
        try:
            kind, task_id, reason = control.recv()
        except (EOFError, OSError):
            return
        if kind == "stop":
            current.stop(task_id, reason)
