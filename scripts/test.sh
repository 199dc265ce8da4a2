#!/usr/bin/env bash
# Set up (scripts/setup.sh), lint (ruff, rules in pyproject.toml) and run the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
ruff check .
python -m pytest -q "$@"
