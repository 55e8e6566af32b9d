"""Negative control: a subreaper that reaps on a 1 s timer, as quiesce must not.

argv: CMD... — spawns CMD, then every second reaps whatever has exited;
exits with CMD's status once it has no child left.
"""

import os
import sys
import time

from quiesce._proc._platform import set_child_subreaper

if __name__ == "__main__":
    assert set_child_subreaper()
    command = os.posix_spawnp(sys.argv[1], sys.argv[1:], os.environ)
    status = 0
    while True:
        time.sleep(1.0)
        try:
            while (reaped := os.waitpid(-1, os.WNOHANG))[0]:
                if reaped[0] == command:
                    status = os.waitstatus_to_exitcode(reaped[1])
        except ChildProcessError:
            sys.exit(status)
