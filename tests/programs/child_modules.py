"""Print, as JSON, the modules a scope's child process imported (argv: START_METHOD).

A fresh interpreter, so that the test runner's own imports (pytest imports
inspect) reach no fork server; the imports are under the main guard, as a
spawn child imports this file too.
"""

import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

if __name__ == "__main__":
    from quiesce._scope._scope import Scope

    from child_targets import loaded_modules

    with Scope(mp_context=sys.argv[1]) as scope:
        worker = scope.process(loaded_modules)
        scope.join(60)
    print(json.dumps(worker.result))
