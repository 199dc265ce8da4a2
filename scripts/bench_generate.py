"""Decoding throughput of SmolLM2-135M-Instruct: reasoner's sampler against ``model.generate()`` (the
path TRL's GRPOTrainer takes without vLLM) in the same run, and against this machine's bounds.

    python scripts/bench_generate.py                         # 32 rows (4 prompts x 8), 64 and 256 new tokens
    python scripts/bench_generate.py --rows 32 --tokens 64 --reps 5

Every row decodes exactly ``--tokens`` tokens (EOS is ignored on both sides) so the work is equal.
Figures are medians over ``--reps`` runs after one warm-up, alternating the contenders. Bounds, both
measured here in the same run:
* memory traffic: each decode step reads every weight once (bf16: 2 bytes a parameter); the bound is
  tokens/s = rows / (weight bytes / bandwidth), with the bandwidth of a bf16 ``sum`` over a tensor of
  the model's size;
* compute: 2 FLOPs per matmul weight per token at the best bf16 ``torch.mm`` rate of a 32-row product.
Needs SmolLM2 (``bash scripts/setup.sh --smollm2``).
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

import reasoner  # noqa: F401  (sets OMP_WAIT_POLICY before torch spins up its threads)
from reasoner.config import ModelConfig
from reasoner.models import load_model
from reasoner.sampler import SamplingParams
from reasoner.sampler.transformers import TransformersSampler

QUESTIONS = ["What is 47 + 35?", "Solve 3x + 5 = 20 for x.", "Name three prime numbers.", "What is 81 - 19?"]


def bandwidth_gbs(n_params: int) -> float:
    x = torch.ones(n_params, dtype=torch.bfloat16)
    x.sum()
    best = min(_time(lambda: x.sum()) for _ in range(5))
    return 2 * n_params / best / 1e9


def mm_gflops(rows: int, k: int = 576, n: int = 3072) -> float:
    a, b = torch.randn(rows, k, dtype=torch.bfloat16), torch.randn(k, n, dtype=torch.bfloat16)
    a @ b
    return max(2 * rows * k * n / _time(lambda: a @ b) for _ in range(20)) / 1e9


def _time(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def ours(model, tok, prompts, n: int, tokens: int):
    sampler = TransformersSampler(model, tok)
    sampler.eos_ids = [len(tok)]  # an id never sampled: every row runs to `tokens`
    params = SamplingParams(n=n, temperature=1.0, max_new_tokens=tokens, seed=0)
    return lambda: int(sampler.generate(prompts, params).completion_mask.sum())


def hf_generate(model, tok, prompts, n: int, tokens: int):
    enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)

    def run():
        with torch.inference_mode():
            out = model.generate(**enc, do_sample=True, temperature=1.0, top_p=1.0, top_k=0, num_return_sequences=n,
                                 max_new_tokens=tokens, min_new_tokens=tokens, pad_token_id=tok.pad_token_id)
        return (out.shape[1] - enc["input_ids"].shape[1]) * out.shape[0]
    return run


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=32, help="rows decoded together (4 prompts x rows/4 samples)")
    p.add_argument("--tokens", default="64,256")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--precisions", default="bfloat16,float32")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    n = a.rows // len(QUESTIONS)
    rates: dict[str, list[float]] = {}
    for dtype in a.precisions.split(","):
        model, tok = load_model(ModelConfig(name="smollm2"), dtype=dtype)
        model.eval()
        prompts = [tok.apply_chat_template([{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True)
                   for q in QUESTIONS]
        for tokens in (int(t) for t in a.tokens.split(",")):
            fns = {f"reasoner {dtype}": ours(model, tok, prompts, n, tokens),
                   f"model.generate {dtype}": hf_generate(model, tok, prompts, n, tokens)}
            for fn in fns.values():
                fn()  # warm-up
            for _ in range(a.reps):
                for name, fn in fns.items():
                    t0 = time.perf_counter()
                    done = fn()
                    rates.setdefault(f"{name} x{tokens}", []).append(done / (time.perf_counter() - t0))
        n_params = sum(x.numel() for x in model.parameters())
        del model
    linear = n_params  # SmolLM2 ties its head to the embedding: every parameter is read once per step as a matmul
    bw, peak = bandwidth_gbs(n_params), mm_gflops(a.rows)
    print(f"SmolLM2-135M ({n_params / 1e6:.1f}M parameters), {a.rows} rows, {a.threads} threads, medians of {a.reps}")
    for name, xs in rates.items():
        print(f"  {name:32s} {statistics.median(xs):8.0f} tokens/s")
    mem = a.rows / (2 * n_params / (bw * 1e9))
    comp = a.rows / (2 * linear * a.rows / (peak * 1e9))
    print(f"  memory-traffic bound (bf16 weights {2 * n_params / 1e6:.0f} MB at {bw:.1f} GB/s): {mem:8.0f} tokens/s")
    print(f"  compute bound (bf16 mm at {a.rows} rows: {peak:.0f} GFLOP/s):          {comp:8.0f} tokens/s")


if __name__ == "__main__":
    main()
