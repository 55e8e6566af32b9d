"""tini test/sigconf/sigconf-test.c, rewritten: ``sigconf.py [+BLOCK | ~IGNORE]... -- CMD...``
blocks (+) or ignores (~) the named signals, then execs CMD. tini's own set is
``~TTOU ~SEGV ~INT +TTIN +ILL +TERM``."""

import os
import signal
import sys

if __name__ == "__main__":
    split = sys.argv.index("--")
    blocked = set()
    for spec in sys.argv[1:split]:
        signum = signal.Signals["SIG" + spec[1:]]
        if spec[0] == "~":
            signal.signal(signum, signal.SIG_IGN)
        else:
            blocked.add(signum)
    signal.pthread_sigmask(signal.SIG_BLOCK, blocked)
    command = sys.argv[split + 1:]
    os.execvp(command[0], command)
