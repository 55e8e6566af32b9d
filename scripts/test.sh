#!/usr/bin/env bash
# Install quiesce with its test and docs tools into .venv, then lint, type-check, build the
# documentation site (warnings are errors: a broken reference fails) and run the tests.
# README.md and .ci/run both call exactly this script.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[test,docs,dask]'
.venv/bin/ruff check
.venv/bin/mypy
.venv/bin/lint-imports --no-cache
NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict   # into site/ (git-ignored); not --quiet,
# which would also hide the warnings that --strict counts
.venv/bin/python -m pytest "$@"
