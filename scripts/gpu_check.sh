#!/usr/bin/env bash
# The GPU check, for the day the device tool lends a GPU. That machine has torch, transformers and peft but
# no vLLM and no network, and at most 64 MiB travels with the working tree: so no vLLM there, and no
# SmolLM2 weights (a random model of SmolLM2's shape stands in for the throughput figures).
#
#   bash scripts/gpu_check.sh --download [DIR]   here (PyPI reachable), DIR default .whl (git-ignored):
#       the wheels that machine lacks (math-verify, its LaTeX parser latex2sympy2_extended, the antlr4
#       runtime; pure Python, a few MiB), the embedded tiny model (3 MiB, so no warm start there) and
#       SmolLM2's config and tokenizer (2 MiB; needs `bash scripts/setup.sh --smollm2` here)
#   bash scripts/gpu_check.sh [DIR]              there, in under 10 minutes (device run with carry [".whl"]):
#       installs the wheels into /tmp/site, then
#       1. pytest -m gpu (tests/test_gpu.py: the sampler and log-prob passes on CUDA, fp32 and bf16);
#       2. a short embedded-default training run on CUDA, model.precision=bf16-mixed, transformers backend:
#          median step time and its parts, tokens/s, held-out accuracy before -> after;
#       3. throughput on a random SmolLM2-shaped model in bf16: 32 rows (4 prompts x 8) x 64 and 256 new
#          tokens through our sampler (tokens/s), the sampled tokens' log-probs against the recompute and
#          the lean forward against the plain one (max / mean |difference|), one forward+backward's time.
# Each part has its own time limit; the script goes on past a failed part and exits non-zero at the end.
# GPU_CHECK_DEVICE=cpu runs parts 2 and 3 on the CPU (to check the script itself here; part 1 skips), best with
# GPU_CHECK_TOKENS=8,16 (default 64,256 new tokens).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PY=${PYTHON:-python3}
MATH_VERIFY=${MATH_VERIFY_VERSION:-0.9.0}
LATEX2SYMPY=${LATEX2SYMPY_VERSION:-1.11.0}
ANTLR=${ANTLR_VERSION:-4.13.2}

download() {
  local dir=$1
  set -e
  mkdir -p "$dir/cache"
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 --platform any -d "$dir" \
    "math-verify==$MATH_VERIFY" "latex2sympy2_extended==$LATEX2SYMPY" "antlr4-python3-runtime==$ANTLR"
  PYTHONPATH=$ROOT "$PY" - "$dir" <<'EOF'
import shutil, sys
from pathlib import Path

from reasoner.config import ModelConfig
from reasoner.models import resolve

out = Path(sys.argv[1])
tiny = Path(resolve(ModelConfig(name="tiny")).path)
shutil.copytree(tiny, out / "cache" / tiny.name, dirs_exist_ok=True)
try:
    smol = Path(resolve(ModelConfig(name="smollm2")).path)
except ValueError as e:
    sys.exit(f"gpu_check.sh --download: {e}")
(out / "smollm2-shape").mkdir(exist_ok=True)
for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
    if (smol / name).is_file():
        shutil.copy(smol / name, out / "smollm2-shape" / name)
EOF
  du -sh "$dir"
}

if [ "${1:-}" = "--download" ]; then
  download "${2:-.whl}"
  exit 0
fi
WHL=${1:-.whl}
if [ ! -d "$WHL/smollm2-shape" ]; then
  echo "gpu_check.sh: no $WHL/smollm2-shape: run 'bash scripts/gpu_check.sh --download $WHL' here first" >&2
  exit 2
fi
"$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
  "$WHL"/*.whl || exit 2
export PYTHONPATH=$ROOT:/tmp/site REASONER_CACHE=$ROOT/$WHL/cache PYTHONUNBUFFERED=1
export GPU_CHECK_DEVICE=${GPU_CHECK_DEVICE:-cuda} GPU_CHECK_TOKENS=${GPU_CHECK_TOKENS:-64,256}
RUN=${GPU_CHECK_OUT:-/tmp/gpu_check}
mkdir -p "$RUN"
FAILED=()
"$PY" -c "import torch, transformers, peft; print('torch', torch.__version__, 'cuda', torch.version.cuda, '|', \
torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU', '| transformers', transformers.__version__, \
'| peft', peft.__version__)" || exit 2

echo "== 1. pytest -m gpu"
timeout 180 "$PY" -m pytest -q -m gpu -p no:cacheprovider tests/test_gpu.py -s || FAILED+=("pytest -m gpu")

echo "== 2. the embedded default on $GPU_CHECK_DEVICE, bf16-mixed, transformers backend, 60 steps"
if timeout 240 "$PY" -m reasoner train run.steps=60 run.device="$GPU_CHECK_DEVICE" model.precision=bf16-mixed \
     sampling.backend=transformers run.out_dir="$RUN/train" run.overwrite=true run.progress=false run.eval_every=0 \
     > "$RUN/train.log" 2>&1; then
  grep "held-out accuracy" "$RUN/train.log"
  "$PY" - "$RUN/train/metrics.jsonl" <<'EOF'
import json, statistics, sys

rows = [r for r in map(json.loads, open(sys.argv[1])) if "time/update" in r][5:]  # past the warm-up steps
parts = ("generate", "verify", "reference", "advantage", "update")
med = {p: statistics.median(r[f"time/{p}"] for r in rows) for p in parts}
print(f"step time (median of {len(rows)} steps) {sum(med.values()):.3f} s: "
      + ", ".join(f"{p} {v:.3f}" for p, v in med.items())
      + f"; tokens/s {statistics.median(r['tokens_per_s'] for r in rows):.0f}")
EOF
else
  tail -20 "$RUN/train.log"; FAILED+=("training run")
fi

echo "== 3. throughput: a random model of SmolLM2's shape, bf16, 32 rows"
timeout 240 "$PY" - "$WHL/smollm2-shape" <<'EOF' || FAILED+=("throughput")
import os, statistics, sys, time

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from reasoner.logprobs import completion_logp, full_forward_logp
from reasoner.sampler import SamplingParams
from reasoner.sampler.transformers import TransformersSampler

src, device = sys.argv[1], os.environ["GPU_CHECK_DEVICE"]
sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
torch.manual_seed(0)
model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(src), dtype=torch.bfloat16).to(device).eval()
tok = AutoTokenizer.from_pretrained(src, padding_side="left")
tok.pad_token = tok.pad_token or tok.eos_token
prompts = [tok.apply_chat_template([{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True)
           for q in ["What is 47 + 35?", "Solve 3x + 5 = 20 for x.", "Name three prime numbers.", "What is 81 - 19?"]]
sampler = TransformersSampler(model, tok, device=device)
sampler.eos_ids = [len(tok) + 1]  # never sampled: every row decodes every token
print(f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters on {device}")
for tokens in map(int, os.environ["GPU_CHECK_TOKENS"].split(",")):
    params = SamplingParams(n=8, temperature=1.0, max_new_tokens=tokens, seed=0)
    sampler.generate(prompts, params)  # warm-up
    rates = []
    for _ in range(3):
        sync()
        t0 = time.perf_counter()
        roll = sampler.generate(prompts, params)
        sync()
        rates.append(int(roll.completion_mask.sum()) / (time.perf_counter() - t0))
    print(f"  sampler, 32 rows x {tokens} new tokens: {statistics.median(rates):.0f} tokens/s (median of 3)")
inputs = [x.to(device) for x in (roll.prompt_ids, roll.prompt_mask, roll.completion_ids, roll.completion_mask)]
with torch.no_grad():
    lean = completion_logp(model, *inputs)[0]
    pids, pmask, cids, m = inputs
    plain = full_forward_logp(model, torch.cat([pids, cids], 1), torch.cat([pmask, m], 1), cids, m, 1.0, False)[0]
for name, other in [("sampler vs recompute", roll.logp.to(device)), ("lean vs plain forward", plain)]:
    d = (lean - other)[m].abs().float()
    print(f"  {name} (bf16 log-probs, {int(m.sum())} tokens): max {d.max():.3g}, mean {d.mean():.3g}")
times = []
for _ in range(4):
    sync()
    t0 = time.perf_counter()
    completion_logp(model, *inputs)[0].sum().backward()
    sync()
    times.append(time.perf_counter() - t0)
print(f"  log-prob forward+backward over 32 x {tokens}: {statistics.median(times[1:]) * 1e3:.0f} ms (median of 3)")
EOF

if [ ${#FAILED[@]} -gt 0 ]; then
  echo "gpu_check.sh: FAILED: ${FAILED[*]}"; exit 1
fi
echo "gpu_check.sh: all parts passed"
