"""Print, as JSON, the modules a scope's child process given tokens imported (argv: METHOD).

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
        import quiesce

        token = quiesce.StopToken()  # arguments: they travel beside the pickled call
        worker = scope.process(loaded_modules, token, token, quiesce.StopToken())
        scope.join(60)
    print(json.dumps(worker.result))
