"""Start-up cost of ``quiesce run -- true`` against the interpreter's own ``python -c pass``.

Run: .venv/bin/python bench/bench_startup.py [--rounds N]

The contract (SPEC, "Command line"): ``quiesce run -- true`` within 1.5x of
``python -c pass`` of the same interpreter. Both are measured side by side,
taking turns within each round (a shared machine's load then hits both
alike), and the table shows the median of the rounds and the ratio to the
baseline. Rows:

* ``python -c pass``: the baseline;
* ``python -S -c pass``: the interpreter without ``site``, for scale;
* ``quiesce run (launcher)``: the CLI started the way a minimal launcher
  does (``python -c "from quiesce._cli._commandline import main; ..."``):
  the cost of quiesce's own code path;
* ``quiesce run -- true``: the installed ``quiesce`` command (``bin/quiesce``,
  a plain script: the wrapper pip writes for a console-script entry point
  imports ``re`` first, which alone would cost half the budget): the contract;
* ``python -m quiesce run``: through runpy;
* ``true``: the command alone, no interpreter.

Bytecode caches are allowed (``PYTHONDONTWRITEBYTECODE`` is dropped for the
measured commands, and the warm-up round writes them), as in any install:
without them every start compiles quiesce's modules from source.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time

LAUNCHER = "import sys; from quiesce._cli._commandline import main; sys.exit(main())"


def commands() -> dict[str, list[str]]:
    py = sys.executable
    rows = {
        "python -c pass": [py, "-c", "pass"],
        "python -S -c pass": [py, "-S", "-c", "pass"],
        "quiesce run (launcher)": [py, "-c", LAUNCHER, "run", "--", "true"],
        "python -m quiesce run": [py, "-m", "quiesce", "run", "--", "true"],
        "true": ["true"],
    }
    script = os.path.join(os.path.dirname(py), "quiesce")
    if not os.path.exists(script):
        script = shutil.which("quiesce") or ""
    if script:
        rows["quiesce run -- true"] = [script, "run", "--", "true"]
    return rows


def measure(rounds: int) -> dict[str, list[float]]:
    rows = commands()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    times: dict[str, list[float]] = {name: [] for name in rows}
    for argv in rows.values():  # warm the page cache, write bytecode caches
        subprocess.run(argv, check=True, env=env)
    for _ in range(rounds):
        for name, argv in rows.items():
            started = time.perf_counter()
            subprocess.run(argv, check=True, env=env)
            times[name].append(time.perf_counter() - started)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=40)
    args = parser.parse_args()
    times = measure(args.rounds)
    base = statistics.median(times["python -c pass"])
    print(f"{sys.executable} ({sys.version.split()[0]}), {args.rounds} rounds, median")
    print(f"{'command':32} {'ms':>8} {'ratio':>7}")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:32} {median * 1000:8.2f} {median / base:7.2f}x")
    name = "quiesce run -- true" if "quiesce run -- true" in times else "quiesce run (launcher)"
    ratio = statistics.median(times[name]) / base
    print(f"\n{name} / python -c pass = {ratio:.2f} (contract: <= 1.5)")


if __name__ == "__main__":
    main()
