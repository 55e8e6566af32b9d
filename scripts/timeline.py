"""Draw the stop ladder from a real run: docs/img/ladder.svg.

Run: .venv/bin/python scripts/timeline.py [--out docs/img/ladder.svg] [--grace S] [--kill-after S]

One Scope, four workers, each behaving as real code does:

* a cooperative thread that sleeps on its token (``quiesce.sleep``);
* a process that ignores its token (the ladder's SIGTERM ends it: ``Stopped``
  is raised in it, its ``finally`` runs);
* a process that ignores SIGTERM too (only SIGKILL ends it);
* a subprocess tree: a Python command whose child escaped with ``setsid``
  and ignores SIGTERM.

The scope is stopped once every worker has said it is ready. Each process
writes, with ``time.monotonic()`` (machine-wide on Linux), when it was
asked to stop and when a signal reached it; the end of each worker is
``stop_ms`` from the scope's report; the escaper, a stranger to the scope's
bookkeeping, is watched through a pidfd. Nothing is drawn by hand: rerun
the script and the picture shows that run. Linux only (pidfd).

Rejected: drawing the picture from the SPEC's numbers (it would show what
should happen, not what does); matplotlib (a heavy dependency for a few
rectangles; plain SVG text is diffable).
"""

from __future__ import annotations

import argparse
import datetime
import multiprocessing
import os
import platform
import select
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import quiesce

ROOT = Path(__file__).resolve().parent.parent


# -- what each worker does (module level: picklable under every start method) ----------
def note(log: str, what: str) -> None:
    """Append one event line; O_APPEND keeps lines from several processes whole."""
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, f"{what} {time.monotonic():.6f} {os.getpid()}\n".encode())
    finally:
        os.close(fd)


def cooperative_thread(log: str) -> None:
    note(log, "thread ready")
    while not quiesce.stopped():
        quiesce.sleep(10)  # wakes at once when the token stops


def ignores_token(log: str) -> None:
    note(log, "token_process ready")
    try:
        while True:  # never looks at its token
            time.sleep(0.05)
    except quiesce.Stopped:  # the ladder's SIGTERM, turned into Stopped
        note(log, "token_process SIGTERM")
        raise


def ignores_sigterm(log: str) -> None:
    signal.signal(signal.SIGTERM, lambda *_: note(log, "stubborn SIGTERM"))
    note(log, "stubborn ready")
    while True:  # only SIGKILL ends this one
        time.sleep(0.05)


# The subprocess tree: a command that starts an escaper (setsid, ignores SIGTERM).
TREE_LEADER = """
import os, signal, subprocess, sys, time
log = sys.argv[1]
def note(what):
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    os.write(fd, f"{what} {time.monotonic():.6f} {os.getpid()}\\n".encode())
    os.close(fd)
def on_term(*_):
    note("leader SIGTERM")
    sys.exit(0)
signal.signal(signal.SIGTERM, on_term)
subprocess.Popen([sys.executable, "-c", sys.argv[2], log], start_new_session=True)
note("leader ready")
while True:
    time.sleep(0.05)
"""
TREE_ESCAPER = """
import os, signal, sys, time
log = sys.argv[1]
def note(what):
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    os.write(fd, f"{what} {time.monotonic():.6f} {os.getpid()}\\n".encode())
    os.close(fd)
signal.signal(signal.SIGTERM, lambda *_: note("escaper SIGTERM"))
note("escaper ready")
while True:
    time.sleep(0.05)
"""


# -- the run ---------------------------------------------------------------------------
@dataclass
class Row:
    label: str
    detail: str
    ended_by: str
    end_ms: float | None
    signals: list[float] = field(default_factory=list)  # ms at which SIGTERM arrived
    gone_ms: float | None = None  # ms at which the process itself was gone (pidfd)


def read_events(log: str) -> list[tuple[str, str, float, int]]:
    try:
        text = Path(log).read_text()
    except FileNotFoundError:
        return []
    events = []
    for line in text.splitlines():
        who, what, when, pid = line.split()
        events.append((who, what, float(when), int(pid)))
    return events


def wait_for(log: str, names: set[str], patience: float) -> dict[str, int]:
    deadline = time.monotonic() + patience
    while time.monotonic() < deadline:
        ready = {who: pid for who, what, _, pid in read_events(log) if what == "ready"}
        if names <= ready.keys():
            return ready
        time.sleep(0.02)
    raise SystemExit(f"timeline: workers not ready after {patience} s: {names}")


def watch_death(who: str, pid: int, out: dict[str, float]) -> threading.Thread:
    """Record when ``pid`` has exited, through a pidfd (exact, and never a recycled PID)."""
    pidfd = os.pidfd_open(pid)

    def wait() -> None:
        try:
            if select.select([pidfd], [], [], 60)[0]:
                out[who] = time.monotonic()
        finally:
            os.close(pidfd)

    thread = threading.Thread(target=wait, daemon=True)
    thread.start()
    return thread


def run(log: str, grace: float, kill_after: float) -> tuple[list[Row], float]:
    gone: dict[str, float] = {}
    with quiesce.Scope(grace=grace, kill_after=kill_after, name="job") as scope:
        thread = scope.thread(cooperative_thread, log)
        token_process = scope.process(ignores_token, log)
        stubborn = scope.process(ignores_sigterm, log)
        tree = scope.popen([sys.executable, "-c", TREE_LEADER, log, TREE_ESCAPER])
        pids = wait_for(log, {"thread", "token_process", "stubborn", "leader", "escaper"}, 30)
        watchers = [watch_death(who, pids[who], gone) for who in ("leader", "escaper")]
        t0 = time.monotonic()
        scope.stop("timeline: scope stopped")
    for watcher in watchers:
        watcher.join(grace + kill_after + 10)
    events = read_events(log)

    def ms(when: float) -> float:
        return (when - t0) * 1000.0

    def seen(who: str, what: str) -> list[float]:
        return [ms(t) for w, e, t, _ in events if w == who and e == what]

    reports = {r.name: r for r in scope.report()}

    def ended(worker: quiesce.Worker) -> tuple[str, float | None]:
        report = reports[worker.name]
        return str(report.ended_by), report.stop_ms

    rows = []
    how, end = ended(thread)
    rows.append(Row("cooperative thread", "sleeps in quiesce.sleep()", how, end))
    how, end = ended(token_process)
    rows.append(Row("process ignoring its token", "loops; never reads its token", how, end,
                    seen("token_process", "SIGTERM")))
    how, end = ended(stubborn)
    rows.append(Row("process ignoring SIGTERM", "its SIGTERM handler returns", how, end,
                    seen("stubborn", "SIGTERM")))
    how, end = ended(tree)
    leader_gone = ms(gone["leader"]) if "leader" in gone else None
    rows.append(Row("subprocess (popen) leader",
                    "exits on SIGTERM (black x); its worker ends\nonce what it left behind is gone",
                    how, end, seen("leader", "SIGTERM"), gone_ms=leader_gone))
    escaper_end = ms(gone["escaper"]) if "escaper" in gone else None
    rows.append(Row("  its setsid escaper", "grandchild; ignores SIGTERM", "killed (tree)",
                    escaper_end, seen("escaper", "SIGTERM")))
    return rows, t0


# -- the picture -----------------------------------------------------------------------
COLOURS = {"stopped": "#2e7d32", "finished": "#2e7d32", "terminated": "#ef6c00",
           "killed": "#c62828", "killed (tree)": "#c62828", "abandoned": "#6a1b9a"}


def esc(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def svg(rows: list[Row], grace: float, kill_after: float, caption: str) -> str:
    left, right, top, row_h = 330, 190, 76, 58
    width = 1060
    span_ms = max([r.end_ms or 0.0 for r in rows] + [(grace + kill_after) * 1000]) * 1.05
    plot_w = width - left - right
    height = top + row_h * len(rows) + 95

    def x(t_ms: float) -> float:
        return left + plot_w * (t_ms / span_ms)

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="DejaVu Sans, Helvetica, Arial, '
           f'sans-serif" font-size="13">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="10" y="24" font-size="16" font-weight="bold">The ladder, as it ran: '
           f'Scope(grace={grace:g}, kill_after={kill_after:g}).stop() at t = 0</text>']
    bottom = top + row_h * len(rows)
    # Axis, ticks and the ladder's steps.
    out.append(f'<line x1="{left}" y1="{bottom}" x2="{width - right}" y2="{bottom}" '
               'stroke="#444"/>')
    step = 250 if span_ms <= 3000 else 500
    t = 0
    while t <= span_ms:
        out.append(f'<line x1="{x(t):.1f}" y1="{bottom}" x2="{x(t):.1f}" y2="{bottom + 5}" '
                   'stroke="#444"/>')
        out.append(f'<text x="{x(t):.1f}" y="{bottom + 19}" text-anchor="middle" '
                   f'fill="#444">{t} ms</text>')
        t += step
    steps = [(0.0, "1. token stopped", "#1565c0"),
             (grace * 1000, "2. after grace: SIGTERM", "#ef6c00"),
             ((grace + kill_after) * 1000, "3. after kill_after: SIGKILL", "#c62828")]
    for at, label, colour in steps:
        out.append(f'<line x1="{x(at):.1f}" y1="{top - 22}" x2="{x(at):.1f}" y2="{bottom}" '
                   f'stroke="{colour}" stroke-dasharray="5,4"/>')
        out.append(f'<text x="{x(at) + 4:.1f}" y="{top - 26}" fill="{colour}" '
                   f'font-size="12">{esc(label)}</text>')
    for i, row in enumerate(rows):
        y = top + i * row_h
        mid = y + row_h / 2
        lines = row.detail.split("\n")
        first = mid - 4 - 7 * (len(lines) - 1)
        out.append(f'<text x="10" y="{first:.1f}" font-weight="bold">{esc(row.label)}</text>')
        for n, line in enumerate(lines):
            out.append(f'<text x="10" y="{first + 17 + 14 * n:.1f}" fill="#555" '
                       f'font-size="12">{esc(line)}</text>')
        colour = COLOURS.get(row.ended_by, "#555")
        end = row.end_ms if row.end_ms is not None else span_ms
        out.append(f'<rect x="{x(0) - 20:.1f}" y="{mid - 7:.1f}" width="{x(end) - x(0) + 20:.1f}"'
                   f' height="14" fill="{colour}" fill-opacity="0.25" stroke="{colour}"/>')
        for sig_ms in row.signals:
            out.append(f'<path d="M {x(sig_ms) - 6:.1f} {mid + 6:.1f} L {x(sig_ms):.1f} '
                       f'{mid - 7:.1f} L {x(sig_ms) + 6:.1f} {mid + 6:.1f} Z" fill="#ef6c00">'
                       f'<title>SIGTERM received at {sig_ms:.0f} ms</title></path>')
        if row.gone_ms is not None:
            gx = x(row.gone_ms)
            out.append(f'<path d="M {gx - 5:.1f} {mid - 5:.1f} L {gx + 5:.1f} {mid + 5:.1f} '
                       f'M {gx - 5:.1f} {mid + 5:.1f} L {gx + 5:.1f} {mid - 5:.1f}" '
                       f'stroke="black" stroke-width="2"><title>process exited at '
                       f'{row.gone_ms:.0f} ms</title></path>')
        if row.end_ms is not None:
            out.append(f'<line x1="{x(end):.1f}" y1="{mid - 11:.1f}" x2="{x(end):.1f}" '
                       f'y2="{mid + 11:.1f}" stroke="{colour}" stroke-width="3"/>')
            label = f"{row.ended_by} at {row.end_ms:.0f} ms"
        else:
            label = f"{row.ended_by}, end not seen"
        out.append(f'<text x="{x(end) + 8:.1f}" y="{mid + 4:.1f}" fill="{colour}" '
                   f'font-weight="bold">{esc(label)}</text>')
    legend_y = bottom + 45
    out.append(f'<path d="M 10 {legend_y + 2} L 16 {legend_y - 11} L 22 {legend_y + 2} Z" '
               f'fill="#ef6c00"/><text x="30" y="{legend_y}">SIGTERM reached the process'
               '</text>')
    out.append(f'<path d="M 245 {legend_y - 9} L 255 {legend_y + 1} M 245 {legend_y + 1} '
               f'L 255 {legend_y - 9}" stroke="black" stroke-width="2"/>'
               f'<text x="263" y="{legend_y}">the command exited</text>')
    out.append(f'<line x1="420" y1="{legend_y - 12}" x2="420" y2="{legend_y + 3}" '
               f'stroke="#c62828" stroke-width="3"/><text x="430" y="{legend_y}">ended: a worker '
               'as its scope reports it, the escaper as its pidfd saw it</text>')
    out.append(f'<text x="10" y="{legend_y + 26}" fill="#555" font-size="11">'
               f'{esc(caption)}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img" / "ladder.svg")
    parser.add_argument("--grace", type=float, default=1.0)
    parser.add_argument("--kill-after", type=float, default=1.0)
    args = parser.parse_args()
    log = f"/tmp/quiesce-timeline-{os.getpid()}.log"
    try:
        rows, _ = run(log, args.grace, args.kill_after)
    finally:
        if not os.environ.get("TIMELINE_KEEP_LOG"):
            Path(log).unlink(missing_ok=True)
    for row in rows:
        signals = ", ".join(f"{s:.0f}" for s in row.signals) or "-"
        end = "not seen" if row.end_ms is None else f"{row.end_ms:.0f} ms"
        print(f"{row.label.strip():<28} SIGTERM at {signals:>8} ms   {row.ended_by:<14} {end}")
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    caption = (f"Measured {when} by scripts/timeline.py on {platform.system()} "
               f"{platform.machine()}, {os.cpu_count()} cores, Python "
               f"{platform.python_version()}, start method "
               f"{multiprocessing.get_start_method()}. Times from the stop request.")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(svg(rows, args.grace, args.kill_after, caption))
    print(f"wrote {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
