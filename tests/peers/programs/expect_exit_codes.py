"""tini's exit code test in one process: for each CODE, ``-e CODE`` maps it to 0
(inclusive) and ``-e`` of every other code leaves it alone (exclusive)."""

import sys

from quiesce._cli._supervise import Options, supervise

if __name__ == "__main__":
    failures = []
    for code in range(256):
        command = ["sh", "-c", f"exit {code}"]
        inclusive = supervise(command, Options(expect_exit=frozenset({code})))
        exclusive = supervise(command, Options(expect_exit=frozenset(set(range(256)) - {code})))
        if (inclusive, exclusive) != (0, code):
            failures.append((code, inclusive, exclusive))
    print(failures)
    sys.exit(1 if failures else 0)
