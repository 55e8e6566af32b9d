#!/usr/bin/env bash
# Build the documentation site into site/ (warnings are errors, as in CI); regenerates nothing.
#   bash scripts/docs.sh          build site/ (open site/index.html)
#   bash scripts/docs.sh serve    live preview on http://127.0.0.1:8000
# The ladder picture is made by its own, slower command (it runs a real scope):
#   .venv/bin/python scripts/timeline.py      -> docs/img/ladder.svg (committed)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/mkdocs ]; then
    python3 -m venv .venv
    .venv/bin/python -m pip install --quiet -e '.[docs]'
fi
if [ "${1:-build}" = serve ]; then
    NO_MKDOCS_2_WARNING=1 exec .venv/bin/mkdocs serve --strict
fi
NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict
echo "site built: site/index.html"
