"""``python -m quiesce``: the same as the ``quiesce`` command."""

import sys

from quiesce._cli._commandline import main

sys.exit(main())
