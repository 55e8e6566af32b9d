"""The guardian: an owner's orphans die with it, even when it is SIGKILLed.

Each test starts a real owner process (OWNER below) that starts its
guardian, registers a process group, starts grandchildren and control
processes, prints their PIDs as JSON, then waits to be killed.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from quiesce._proc._guardian_client import Guardian
from quiesce._proc._proctree import ProcRef

from procs import alive

OWNER = r"""
import json, os, subprocess, sys, time
from quiesce._proc import _proctree as pt
from quiesce._proc._guardian_client import Guardian

mode = sys.argv[1]
started = time.perf_counter()
g = Guardian.get()
startup_ms = (time.perf_counter() - started) * 1000
out = {"owner": os.getpid(), "guardian": g.pid, "startup_ms": startup_ms}

# ours, in a registered group: a shell and its two background children, untagged
group = subprocess.Popen(["sh", "-c", "sleep 100 & sleep 100 & wait"], process_group=0)
g.watch_group(group.pid)
# ours, by tag only: a setsid'd double-forked escaper in no registered group
esc = subprocess.Popen(
    [sys.executable, "-S", "-c",
     "import os\nif os.fork() == 0:\n os.setsid()\n pid = os.fork()\n"
     " if pid == 0: os.execvp('sleep', ['sleep', '100'])\n print(pid, flush=True)\n"
     " os._exit(0)\nos.wait()"],
    env=pt.env_with_tag(pt.new_tag()), stdout=subprocess.PIPE, text=True)
out["escaper"] = int(esc.stdout.readline())
esc.wait()
# not ours: its own unregistered group and no tag; a look-alike tag; a group
# registered then unregistered
controls = [
    subprocess.Popen(["sleep", "100"], process_group=0),
    subprocess.Popen(["sleep", "100"], process_group=0,
                     env=pt.env_with_tag(pt.owner_tag() + "0.1")),
    subprocess.Popen(["sleep", "100"], process_group=0),
]
g.watch_group(controls[2].pid)
g.watch_group(group.pid)  # twice is fine
g.unwatch_group(controls[2].pid)
if mode == "stray-pipe":
    # a process that inherited the pipe's write end: EOF never comes, the pidfd must do
    fd = os.dup(Guardian._instance._wfd)
    controls.append(subprocess.Popen(["sleep", "100"], process_group=0, pass_fds=[fd]))
out["controls"] = [c.pid for c in controls]
out["group"] = group.pid
while len(pt.snapshot(pgid=group.pid)) < 3:
    time.sleep(0.01)
print(json.dumps(out), flush=True)
if mode == "exit":
    sys.stdin.readline()
    sys.exit(0)
time.sleep(100)
"""



class Owner:
    def __init__(self, mode: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", OWNER, mode], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        self.info = json.loads(self.proc.stdout.readline())
        self.guardian: int = self.info["guardian"]
        self.controls = {pid: ProcRef.open(pid) for pid in self.info["controls"]}
        # everything the guardian must end: the owner's tree (but the guardian) + the escaper
        self.ours = [p.pid for p in psutil.Process(self.proc.pid).children(recursive=True)
                     if p.pid != self.guardian and p.pid not in self.controls]
        self.ours.append(self.info["escaper"])
        self.refs = [ProcRef.open(pid) for pid in self.ours]

    def gone_within(self, seconds: float) -> float:
        """Seconds until every process of ``ours`` ended (asserting it is < ``seconds``)."""
        started = time.monotonic()
        while any(alive(pid) for pid in self.ours) and time.monotonic() - started < 5:
            time.sleep(0.001)
        latency = time.monotonic() - started
        assert [pid for pid in self.ours if alive(pid)] == []
        assert latency < seconds
        return latency

    def end(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for ref in [*self.refs, *self.controls.values()]:
            if ref is not None:
                ref.send(signal.SIGKILL)


@pytest.fixture
def owner(request: pytest.FixtureRequest) -> Iterator[Owner]:
    o = Owner(request.param)
    try:
        yield o
    finally:
        o.end()


def _check_guardian_ended_and_controls_live(o: Owner) -> None:
    deadline = time.monotonic() + 2
    while alive(o.guardian) and time.monotonic() < deadline:
        time.sleep(0.005)
    assert not alive(o.guardian), "the guardian outlived its sweep"
    # negative test: the sweep is over, and nothing that isn't the owner's was touched
    for pid, ref in o.controls.items():
        assert ref is not None and ref.alive(), f"control {pid} was killed"


@pytest.mark.parametrize("owner", ["normal", "stray-pipe"], indirect=True)
def test_owner_sigkilled_its_orphans_die_and_strangers_live(owner: Owner) -> None:
    assert owner.guardian is not None and len(owner.ours) == 4  # sh, its 2 sleeps, escaper
    assert all(alive(pid) for pid in owner.ours)
    owner.proc.send_signal(signal.SIGKILL)
    owner.proc.wait()
    latency = owner.gone_within(1.0)  # the SPEC's guarantee
    print(f"\n{len(owner.ours)} orphans gone {latency * 1000:.1f} ms after the owner's SIGKILL "
          f"(guardian started in {owner.info['startup_ms']:.1f} ms)")
    _check_guardian_ended_and_controls_live(owner)


@pytest.mark.parametrize("owner", ["exit"], indirect=True)
def test_owner_exiting_normally_ends_its_leftovers_too(owner: Owner) -> None:
    assert owner.proc.stdin is not None
    owner.proc.stdin.write("exit\n")
    owner.proc.stdin.flush()
    assert owner.proc.wait(10) == 0
    owner.gone_within(1.0)
    _check_guardian_ended_and_controls_live(owner)


def _ignored(pid: int) -> int:
    """The SigIgn mask of ``pid``."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigIgn:"):
            return int(line.split()[1], 16)
    return 0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/PID/status")
@pytest.mark.parametrize("owner", ["normal"], indirect=True)
def test_the_guardian_ignores_terminal_signals(owner: Owner) -> None:
    guardian = psutil.Process(owner.guardian)
    mask = (1 << signal.SIGINT - 1) | (1 << signal.SIGTERM - 1) | (1 << signal.SIGHUP - 1)
    deadline = time.monotonic() + 5
    while _ignored(owner.guardian) & mask != mask and time.monotonic() < deadline:
        time.sleep(0.005)  # until it has started and set its handlers
    assert os.getsid(owner.guardian) == owner.guardian  # own session: no terminal's Ctrl-C
    assert "quiesce/_proc/_guardian.py" in " ".join(guardian.cmdline())
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        guardian.send_signal(sig)
    time.sleep(0.2)  # deliberate observation window: a fatal signal would have struck by now
    assert alive(owner.guardian)
    owner.proc.send_signal(signal.SIGKILL)
    owner.proc.wait()
    owner.gone_within(1.0)
    _check_guardian_ended_and_controls_live(owner)


def test_a_guardian_that_cannot_start_degrades_to_a_no_op(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "sys.executable = '/nonexistent/python'\n"
        "from quiesce._proc._guardian_client import Guardian\n"
        "g = Guardian.get(); g.watch_group(12345); g.unwatch_group(12345)\n"
        "print(g.pid, Guardian.get() is g)\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=30)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["None", "True"]
    assert "cannot start the guardian" in run.stderr


# -- the client in this (pytest) process --------------------------------------------
def test_get_is_a_thread_safe_singleton() -> None:
    got: list[Guardian] = []
    threads = [threading.Thread(target=lambda: got.append(Guardian.get())) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(g) for g in got}) == 1
    g = got[0]
    assert g.pid is not None and alive(g.pid)
    with pytest.raises(ValueError, match="pgid"):
        g.watch_group(0)


def test_a_forked_child_gets_its_own_guardian() -> None:
    parent = Guardian.get()
    assert parent.pid is not None
    inherited = parent._wfd
    pipe_end = os.fstat(inherited)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            # The number may be reused at once by a new fd of the child (its token
            # watcher's): what must be gone is the parent's socket itself.
            now = os.fstat(inherited)
            closed = (now.st_dev, now.st_ino) != (pipe_end.st_dev, pipe_end.st_ino)
        except OSError:
            closed = True
        child = Guardian.get()
        os.write(w, json.dumps([closed, child.pid]).encode())
        os._exit(0)
    os.close(w)
    closed, child_guardian = json.loads(os.read(r, 100))
    os.close(r)
    os.waitpid(pid, 0)
    assert closed, "the parent's pipe stayed open in the child: its guardian would never see EOF"
    assert child_guardian not in (None, parent.pid)
    deadline = time.monotonic() + 2
    while alive(child_guardian) and time.monotonic() < deadline:
        time.sleep(0.005)
    assert not alive(child_guardian)  # the child ended, so did its guardian
    assert alive(parent.pid)


def test_a_dead_guardian_is_reaped_and_restarted_with_its_groups(
        caplog: pytest.LogCaptureFixture) -> None:
    first = Guardian.get()
    assert first.pid is not None
    group = subprocess.Popen(["sleep", "100"], process_group=0)
    try:
        first.watch_group(group.pid)
        ref = ProcRef.open(first.pid)
        assert ref is not None
        with caplog.at_level(logging.WARNING, logger="quiesce"):
            ref.send(signal.SIGKILL)
            deadline = time.monotonic() + 5
            while Guardian.get() is first and time.monotonic() < deadline:
                time.sleep(0.005)
        with pytest.raises(psutil.NoSuchProcess):
            psutil.Process(first.pid).status()  # reaped, not a zombie of ours
        second = Guardian.get()
        assert second is not first and second.pid not in (None, first.pid)
        assert group.pid in second._groups
        assert "guardian process" in caplog.text
        second.unwatch_group(group.pid)
    finally:
        group.kill()
        group.wait()
