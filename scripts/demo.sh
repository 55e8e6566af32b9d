#!/usr/bin/env bash
# Install quiesce into .venv and run the demo: the seed's stuck job, without and with quiesce.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e .
.venv/bin/python examples/demo.py
.venv/bin/python examples/demo_asyncio.py  # the same job in asyncio, with quiesce.aio
