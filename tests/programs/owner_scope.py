"""An owner that starts scope processes with grandchildren, then waits to be SIGKILLed.

argv: PIDFILE_DIR START_METHOD. Writes child/grandchild PIDs to files, then
'ready' to stdout.
"""

import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from quiesce._scope._scope import Scope

from targets import spawn_grandchildren

if __name__ == "__main__":
    directory, method = sys.argv[1], sys.argv[2]
    with Scope(mp_context=method) as scope:
        a = scope.process(spawn_grandchildren, os.path.join(directory, "gc-plain"))
        b = scope.process(spawn_grandchildren, os.path.join(directory, "gc-setsid"), True)
        for name in ("gc-plain", "gc-setsid"):
            path = os.path.join(directory, name)
            while not os.path.exists(path) or not os.path.getsize(path):
                time.sleep(0.01)
        with open(os.path.join(directory, "children"), "w") as f:
            f.write(f"{a.pid} {b.pid}")  # type: ignore[attr-defined]
        print("ready", flush=True)
        time.sleep(120)
