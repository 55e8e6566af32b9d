"""Supervise `sh -c 'exit N'` for every N in 0..255 in one process; print the statuses."""

import signal

from quiesce._cli._supervise import Options, supervise

if __name__ == "__main__":
    options = Options(grace=5.0, stop_signal=signal.SIGTERM)
    print(" ".join(str(supervise(["sh", "-c", f"exit {n}"], options)) for n in range(256)))
