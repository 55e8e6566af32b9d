"""_proctree: finding and ending a worker's whole tree, never a stranger.

Real processes and real signals. Every test ends what it starts; the
conftest fixture proves it.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import psutil
import pytest

from quiesce._proc import _proctree
from quiesce._proc._proctree import ProcRef, env_with_tag, kill_tree, new_tag, signal_tree, snapshot

from procs import alive

# argv: DEPTH CODE [escape]. Each level prints "chain PID" and starts the next
# one; the last, given "escape", double-forks a setsid'd `sleep` that is no
# longer anybody's descendant here, and prints "escaper PID".
CHAIN = r"""
import os, subprocess, sys, time
depth, code = int(sys.argv[1]), sys.argv[2]
print("chain", os.getpid(), flush=True)
if depth > 1:
    subprocess.Popen([sys.executable, "-S", "-c", code, str(depth - 1), code] + sys.argv[3:])
elif sys.argv[3:] == ["escape"]:
    r, w = os.pipe()
    if os.fork() == 0:
        os.setsid()
        pid = os.fork()
        if pid == 0:
            os.execvp("sleep", ["sleep", "100"])
        os.write(w, str(pid).encode())
        os._exit(0)
    os.wait()  # the middle process is gone before we tell: the tree is stable
    escaper = os.read(r, 20).decode()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:  # and it exec'd: mid-exec, its environ is unreadable
        try:
            with open(f"/proc/{escaper}/cmdline", "rb") as f:
                if f.read() == b"sleep\0" b"100\0":
                    break
        except OSError:
            pass
        time.sleep(0.001)
    print("escaper", escaper, flush=True)
time.sleep(100)
"""

SLEEP = ["sleep", "100"]



def _start_chain(tag: str, depth: int, escape: bool) -> tuple[subprocess.Popen[str], list[int],
                                                                int | None]:
    argv = [sys.executable, "-S", "-c", CHAIN, str(depth), CHAIN] + (["escape"] if escape else [])
    root = subprocess.Popen(argv, env=env_with_tag(tag), stdout=subprocess.PIPE, text=True)
    assert root.stdout is not None
    chain: list[int] = []
    escaper = None
    while len(chain) < depth or (escape and escaper is None):
        kind, pid = root.stdout.readline().split()
        if kind == "chain":
            chain.append(int(pid))
        else:
            escaper = int(pid)
    return root, chain, escaper


@pytest.fixture
def tag() -> Iterator[str]:
    """A fresh tag; whatever still carries it at the end is killed (the fixture then fails)."""
    t = new_tag()
    yield t
    kill_tree(tag=t, timeout=2.0)


# -- tags -------------------------------------------------------------------------
def test_tags_nest_under_the_owner_tag_and_are_unique_across_threads() -> None:
    owner = _proctree.owner_tag()
    assert len(owner) == 12 and int(owner, 16) >= 0
    seen: list[str] = []

    def take() -> None:
        seen.extend(new_tag() for _ in range(2000))

    threads = [threading.Thread(target=take) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(seen)) == 8000
    assert all(t.startswith(owner + ".") for t in seen)


def test_env_with_tag_appends_once_and_leaves_os_environ_alone(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(_proctree.TAGS_ENV, "outer.1")
    env = env_with_tag("mine.2")
    assert env[_proctree.TAGS_ENV] == "outer.1 mine.2"
    assert env_with_tag("mine.2", env)[_proctree.TAGS_ENV] == "outer.1 mine.2"
    assert env_with_tag("x.1", {})[_proctree.TAGS_ENV] == "x.1"
    assert os.environ[_proctree.TAGS_ENV] == "outer.1"
    _proctree.adopt_tag("mine.3")
    assert os.environ[_proctree.TAGS_ENV] == "outer.1 mine.3"
    with pytest.raises(ValueError, match="tag"):
        env_with_tag("two words")


def test_a_forked_child_gets_a_new_owner_tag() -> None:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.write(w, f"{_proctree.owner_tag()} {new_tag()}".encode())
        os._exit(0)
    os.close(w)
    child_owner, child_tag = os.read(r, 100).decode().split()
    os.close(r)
    os.waitpid(pid, 0)
    assert child_owner != _proctree.owner_tag()
    assert child_tag == child_owner + ".1"


# -- ProcRef ----------------------------------------------------------------------
@pytest.mark.parametrize("opener", [ProcRef.open, ProcRef._open_psutil], ids=["pidfd", "psutil"])
def test_procref_of_an_ended_process_is_dead_and_never_signals(opener: object) -> None:
    proc = subprocess.Popen(SLEEP)
    ref = opener(proc.pid)  # type: ignore[operator]
    assert isinstance(ref, ProcRef) and ref.alive()
    assert ref.send(0)
    proc.kill()
    while alive(proc.pid):
        time.sleep(0.005)
    assert not ref.alive()  # a zombie counts as dead
    assert ref.send(signal.SIGTERM) is False
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not ref.alive()
    assert ref.send(signal.SIGTERM) is False  # reaped: no exception either
    ref.close()
    assert not ref.alive() and ref.send(signal.SIGTERM) is False


def test_procref_open_refuses_zombies_and_bad_pids() -> None:
    proc = subprocess.Popen(SLEEP)
    proc.kill()
    while alive(proc.pid):
        time.sleep(0.005)
    assert ProcRef.open(proc.pid) is None  # a zombie, not yet reaped
    proc.wait()
    with pytest.raises(ValueError, match="pid"):
        ProcRef.open(0)


# -- snapshot and kill_tree ------------------------------------------------------------
def test_kill_tree_ends_a_10_level_chain_and_its_setsid_escaper(tag: str) -> None:
    root, chain, escaper = _start_chain(tag, 10, escape=True)
    assert escaper is not None
    try:
        by_tree = [ref.pid for ref in snapshot(root_pid=root.pid)]
        assert by_tree == chain  # parents before children
        assert escaper not in by_tree  # it escaped: only its tag finds it
        assert psutil.Process(escaper).ppid() != chain[-1]
        assert os.getsid(escaper) != os.getsid(chain[0])
        assert {ref.pid for ref in snapshot(tag=tag)} == {*chain, escaper}
        assert [ref.pid for ref in snapshot(root_pid=root.pid, include_root=False)] == chain[1:]

        assert kill_tree(root_pid=root.pid, tag=tag, timeout=5.0)
        assert snapshot(root_pid=root.pid, tag=tag) == []
        assert not any(alive(pid) for pid in [*chain, escaper])
    finally:
        kill_tree(root_pid=root.pid, tag=tag, timeout=2.0)
        root.wait()
    # kill_tree never reaps: Popen still gets the real status of its child
    assert root.returncode == -signal.SIGKILL


def test_a_chain_whose_middle_died_is_still_found_by_tag(tag: str) -> None:
    root, chain, _ = _start_chain(tag, 6, escape=False)
    try:
        os.kill(chain[2], signal.SIGKILL)  # its children are re-parented away from the root
        while alive(chain[2]):
            time.sleep(0.005)
        assert [ref.pid for ref in snapshot(root_pid=root.pid)] == chain[:2]
        assert {ref.pid for ref in snapshot(tag=tag)} == {*chain[:2], *chain[3:]}
        assert kill_tree(tag=tag)
        assert not any(alive(pid) for pid in chain)
    finally:
        kill_tree(root_pid=root.pid, tag=tag, timeout=2.0)
        root.wait()


def test_the_tag_filter_matches_only_processes_carrying_the_tag(tag: str) -> None:
    """Negative test: siblings without the tag, or with a look-alike, are not signalled."""
    tagged = subprocess.Popen(SLEEP, env=env_with_tag(tag))
    nested = subprocess.Popen(SLEEP, env=env_with_tag(tag + ".7", env_with_tag("other.1")))
    plain = subprocess.Popen(SLEEP)
    lookalike = subprocess.Popen(SLEEP, env=env_with_tag(tag + "0"))
    prefix = subprocess.Popen(SLEEP, env=env_with_tag(tag.rpartition(".")[0] + "x"))
    procs = [tagged, nested, plain, lookalike, prefix]
    refs = {p.pid: ProcRef.open(p.pid) for p in procs}
    try:
        assert {ref.pid for ref in snapshot(tag=tag)} == {tagged.pid, nested.pid}
        assert signal_tree(signal.SIGKILL, tag=tag) == 2
        assert tagged.wait(5) == nested.wait(5) == -signal.SIGKILL
        time.sleep(0.05)  # deliberate observation window: a stray SIGKILL would land by now
        assert plain.poll() is None and lookalike.poll() is None and prefix.poll() is None
    finally:
        for p in procs:
            ref = refs[p.pid]
            if ref is not None:
                ref.send(signal.SIGKILL)
            p.wait()


def test_pgid_selects_the_group_and_include_root_leaves_out_its_leader() -> None:
    group = subprocess.Popen(["sh", "-c", "sleep 100 & sleep 100 & wait"], process_group=0)
    other = subprocess.Popen(SLEEP, process_group=0)
    try:
        deadline = time.monotonic() + 5
        while len(snapshot(pgid=group.pid)) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        members = [ref.pid for ref in snapshot(pgid=group.pid)]
        assert len(members) == 3 and group.pid in members and other.pid not in members
        assert group.pid not in [ref.pid for ref in snapshot(pgid=group.pid, include_root=False)]
        assert kill_tree(pgid=group.pid)
        assert group.wait(5) == -signal.SIGKILL
        assert other.poll() is None
    finally:
        kill_tree(pgid=group.pid, timeout=2.0)
        group.wait()
        other.kill()
        other.wait()


ANCESTOR_B = r"""
import json, os, signal, subprocess, sys
from quiesce._proc import _proctree as pt
tag, a = sys.argv[1], os.getppid()
c = subprocess.Popen(["sleep", "100"])  # inherits the tag, like A and B
found = [r.pid for r in pt.snapshot(root_pid=a, tag=tag, pgid=os.getpgid(0))]
by_tree = [r.pid for r in pt.snapshot(root_pid=a)]  # the walk goes on below us
n = pt.signal_tree(signal.SIGKILL, root_pid=a, tag=tag, pgid=os.getpgid(0))
print(json.dumps({"c": c.pid, "found": found, "by_tree": by_tree, "n": n,
                  "rc": c.wait()}), flush=True)
"""
ANCESTOR_A = (
    "import subprocess, sys\n"
    "sys.exit(subprocess.run([sys.executable, '-c', sys.argv[1], sys.argv[2]]).returncode)\n"
)


def test_never_signals_itself_or_its_ancestors_even_when_tagged(tag: str) -> None:
    """A (tagged) starts B (tagged), which kills the tree/group/tag of A: only C dies."""
    a = subprocess.run([sys.executable, "-c", ANCESTOR_A, ANCESTOR_B, tag],
                       env=env_with_tag(tag), process_group=0, capture_output=True, text=True,
                       timeout=30)
    assert a.returncode == 0, a.stderr
    out = json.loads(a.stdout)
    assert out["found"] == out["by_tree"] == [out["c"]]
    assert out["n"] == 1
    assert out["rc"] == -signal.SIGKILL


KEEPS_FORKING = r"""
import os, time
while True:
    if os.fork() == 0:
        os.setsid()
        os.execvp("sleep", ["sleep", "100"])
    time.sleep(0.001)
"""


def test_kill_tree_ends_a_process_that_keeps_forking_escapers(tag: str) -> None:
    proc = subprocess.Popen([sys.executable, "-S", "-c", KEEPS_FORKING], env=env_with_tag(tag))
    try:
        while len(snapshot(tag=tag)) < 20:
            time.sleep(0.01)
        assert kill_tree(root_pid=proc.pid, tag=tag, timeout=5.0)
        assert snapshot(tag=tag) == []
        assert proc.wait(5) == -signal.SIGKILL
    finally:
        kill_tree(root_pid=proc.pid, tag=tag, timeout=2.0)
        proc.wait()


def test_psutil_fallback_finds_the_same_tree(tag: str, monkeypatch: pytest.MonkeyPatch) -> None:
    root, chain, escaper = _start_chain(tag, 3, escape=True)
    try:
        by_proc = [ref.pid for ref in snapshot(root_pid=root.pid, tag=tag)]
        monkeypatch.setattr(_proctree, "_USE_PROCFS", False)
        assert [ref.pid for ref in snapshot(root_pid=root.pid, tag=tag)] == by_proc
        assert set(by_proc) == {*chain, escaper}
        assert kill_tree(root_pid=root.pid, tag=tag)
    finally:
        monkeypatch.undo()
        kill_tree(root_pid=root.pid, tag=tag, timeout=2.0)
        root.wait()


def test_scanning_hundreds_of_processes_takes_a_few_ms(tag: str) -> None:
    many = subprocess.Popen(["sh", "-c", "for i in $(seq 300); do sleep 100 & done; wait"],
                            env=env_with_tag(tag))
    try:
        deadline = time.monotonic() + 20
        while len(snapshot(root_pid=many.pid)) < 301 and time.monotonic() < deadline:
            time.sleep(0.05)
        total = len(psutil.pids())
        timings = {}
        for name, kw in [("tag, no match", {"tag": "0123456789ab.1"}),
                         ("tree+tag, 301 found", {"root_pid": many.pid, "tag": tag})]:
            runs = []
            for _ in range(21):
                started = time.perf_counter()
                snapshot(**kw)  # type: ignore[arg-type]
                runs.append(time.perf_counter() - started)
            timings[name] = sorted(runs)[10] * 1000
        print(f"\nscan of {total} processes, median ms: "
              + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()))
        assert timings["tag, no match"] < 50
        started = time.perf_counter()
        assert kill_tree(root_pid=many.pid, tag=tag)
        print(f"kill_tree of 301 processes: {(time.perf_counter() - started) * 1000:.0f} ms")
    finally:
        kill_tree(root_pid=many.pid, tag=tag, timeout=2.0)
        many.wait()


def test_bad_arguments_are_named() -> None:
    with pytest.raises(ValueError, match="root_pid, tag or pgid"):
        snapshot()
    with pytest.raises(ValueError, match="pgid"):
        signal_tree(signal.SIGTERM, pgid=-3)
    with pytest.raises(ValueError, match="tag"):
        snapshot(tag="")
    for bad in (-1.0, math.nan):
        with pytest.raises(ValueError, match="timeout"):
            kill_tree(tag="x.1", timeout=bad)
