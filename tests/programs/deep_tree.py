"""A chain of processes DEPTH deep; argv: DEPTH PIDDIR [setsid|doublefork].

Each level writes PIDDIR/<level> with its PID, starts the next level and
sleeps. With 'setsid', the deepest level leaves the session; with
'doublefork', the middle level exits after starting the next one, so the
rest of the chain is re-parented away from the root.
"""

import os
import subprocess
import sys
import time

depth, directory = int(sys.argv[1]), sys.argv[2]
trick = sys.argv[3] if len(sys.argv) > 3 else ""
level = int(os.environ.get("DEEP_TREE_LEVEL", "1"))
if trick == "setsid" and level == depth:
    os.setsid()
if level < depth:
    env = {**os.environ, "DEEP_TREE_LEVEL": str(level + 1)}
    subprocess.Popen([sys.executable, __file__, *sys.argv[1:]], env=env)
with open(os.path.join(directory, str(level)), "w") as f:
    f.write(str(os.getpid()))
if trick == "doublefork" and level == depth // 2:
    os._exit(0)
while True:
    time.sleep(1)
