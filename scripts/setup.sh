#!/usr/bin/env bash
# Create .venv (if missing) with reasoner and its test dependencies; install bubblewrap for the
# code sandbox where we can. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip
# The pinned CPU build of torch (an unpinned torch pulls a multi-GB CUDA build).
python -m pip install -q "torch==${TORCH_VERSION:-2.13.0}"
python -m pip install -q -e '.[test]'
if ! command -v bwrap >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo -n"
  ($SUDO apt-get install -y -q bubblewrap >/dev/null 2>&1 \
    || ($SUDO apt-get update -q >/dev/null 2>&1 && $SUDO apt-get install -y -q bubblewrap >/dev/null 2>&1)) \
    || echo "warning: could not install bubblewrap; code verification will run at the weak isolation level" >&2
fi
