"""tini test/pdeathsignal/stage_1.py, rewritten: argv QUIESCE... -- FILE; run
``QUIESCE -p SIGUSR1 -- pdeathsig_stage_2.py OUR_PID FILE`` (stage 2 kills us)."""

import os
import subprocess
import sys

if __name__ == "__main__":
    here = os.path.dirname(os.path.abspath(__file__))
    split = sys.argv.index("--")
    quiesce, target = sys.argv[1:split], sys.argv[split + 1]
    subprocess.Popen([*quiesce, "-v", "-p", "SIGUSR1", "--", sys.executable,
                      os.path.join(here, "pdeathsig_stage_2.py"), str(os.getpid()),
                      target]).wait()
