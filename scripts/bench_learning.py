"""Same learning: held-out greedy accuracy after the same number of steps, reasoner vs TRL GRPOTrainer.

    python scripts/bench_learning.py                       # tiny model, 8 x 8, 16 new tokens, 100 steps, seed 0
    python scripts/bench_learning.py --steps 50 --seeds 0,1 --eval-size 128
    python scripts/bench_learning.py --config recipes/smollm2_arithmetic.yaml --steps 50 --seeds 0,1 --trl-bf16

Both trainers get the ``scripts/bench_step.py`` set-up (the same prompts in the same order, the
same math verifier, lr 1e-4 constant, beta 0.04 with k3 KL in the loss, one PPO epoch, fp32,
the same torch threads and seed), each in its own subprocess. Before and after training, each
policy is scored by the same function, ``benchmarks.TrainingEval`` (greedy decoding, the
math verifier), on the same held-out synthetic test problems; a reasoner run is scored twice, by its
own evaluation (a bf16-mixed run's runs its bf16 compute copy) and, as TRL's, on its float32 weights
(``heldout_fp32``: the masters it saves, and the float32 weights both start from). With ``--config`` both trainers take
that recipe's model, prompts, sampling, loss aggregation (TRL's ``loss_type`` of the same
normalisation), optimizer and KL settings instead; ``--trl-bf16`` runs TRL with ``bf16=True``.
TRL is a benchmark-only dependency (``bash scripts/setup.sh --bench``).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_step import CASES, build_trl, make_config, trl_model_dir  # noqa: E402


def heldout(model, tok, cfg) -> float:
    """Greedy accuracy of ``model`` on cfg's held-out problems, scored as reasoner's trainer scores them."""
    from reasoner import data
    from reasoner.sampler.transformers import TransformersSampler
    from reasoner.benchmarks import TrainingEval

    problems = data.load_problems(cfg.data.eval, cfg.data.eval_split, cfg.data)
    problems = problems[:cfg.data.eval_size] if cfg.data.eval_size else problems
    prompts = [data.render(p, tok, cfg.data) for p in problems]
    sampler = TransformersSampler(model, tok, device="cpu")
    return TrainingEval(sampler, (problems, prompts), {}, cfg.sampling.max_new_tokens)(step=0)["eval/accuracy"]


def heldout_fp32(path: str | Path, cfg) -> float:
    """``heldout`` of the weights saved in ``path``, loaded in float32: how TRL's weights are scored, so
    a bf16-mixed run (whose own evaluation runs its bf16 compute copy) is scored like for like too."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from reasoner.models import prepare_tokenizer

    tok = AutoTokenizer.from_pretrained(path)
    prepare_tokenizer(tok)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    return heldout(model, tok, cfg)


def recipe_config(path: str, steps: int, threads: int, out_dir: str, overrides: list[str]):
    from reasoner.config import load_config

    return load_config(path, [f"run.steps={steps}", f"run.threads={threads}", f"run.out_dir={out_dir}",
                              "run.progress=false", "run.save_every=0", "run.eval_every=0",
                              "run.log_samples_every=0", "run.device=cpu", *overrides])


def make(case: str, steps: int, threads: int, out_dir: str, overrides: list[str], config: str | None):
    return (recipe_config(config, steps, threads, out_dir, overrides) if config
            else make_config(case, steps, threads, out_dir, overrides))


def run_reasoner(case: str, steps: int, threads: int, overrides: list[str], config: str | None = None) -> dict:
    from reasoner.trainer import train

    with tempfile.TemporaryDirectory() as tmp:
        cfg = make(case, steps, threads, tmp, overrides, config)
        t0 = time.perf_counter()
        summary = train(cfg)  # evaluates with benchmarks.TrainingEval before and after
        seconds = time.perf_counter() - t0
        rows = [json.loads(line) for line in (Path(tmp) / "metrics.jsonl").read_text().splitlines()]
        fp32 = {"before_fp32": heldout_fp32(trl_model_dir(cfg, tmp), cfg),  # the weights TRL starts from
                "after_fp32": heldout_fp32(summary["final_model"], cfg)}  # the float32 masters
    rewards = [r["reward/mean"] for r in rows if "reward/mean" in r]
    return {"before": summary["heldout_accuracy_before"], "after": summary["heldout_accuracy_after"],
            "rewards": rewards, "seconds": seconds, "problems": summary["heldout_problems"], **fp32}


def run_trl(case: str, steps: int, threads: int, overrides: list[str], config: str | None = None,
            bf16: bool = False) -> dict:
    from transformers import TrainerCallback

    cfg = make(case, steps, threads, tempfile.mkdtemp(), overrides, config)
    trainer, tok, cfg, _ = build_trl(case, steps, threads, overrides, bf16=bf16, cfg=cfg)
    rewards: list[float] = []

    class Rewards(TrainerCallback):
        def on_log(self, a, s, c, logs=None, **k):
            if logs and "reward" in logs:
                rewards.append(logs["reward"])

    trainer.add_callback(Rewards())
    t0 = time.perf_counter()
    before = heldout(trainer.model, tok, cfg)
    trainer.train()
    after = heldout(trainer.model, tok, cfg)
    return {"before": before, "after": after, "rewards": rewards, "seconds": time.perf_counter() - t0,
            "problems": cfg.data.eval_size, "before_fp32": before, "after_fp32": after}  # its weights are fp32


def spawn(kind: str, case: str, steps: int, threads: int, overrides: list[str], extra: list[str]) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".json") as f:
        cmd = [sys.executable, __file__, "--worker", kind, "--case", case, "--steps", str(steps),
               "--threads", str(threads), "--json", f.name] + [f"--set={o}" for o in overrides] + extra
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "OMP_WAIT_POLICY": "PASSIVE",
               "TOKENIZERS_PARALLELISM": "false"}
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if proc.returncode:
            raise RuntimeError(f"{kind} worker failed:\n{proc.stderr[-4000:]}")
        return json.loads(Path(f.name).read_text())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--case", default="tiny16", help=f"one of {', '.join(CASES)}")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--seeds", default="0", help="comma-separated run.seed values; accuracies are averaged")
    p.add_argument("--eval-size", type=int, default=256, help="held-out synthetic test problems (0 = all)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--set", action="append", default=[], help="extra config override key=value (both trainers)")
    p.add_argument("--config", help="a recipe YAML both trainers follow (default: the --case set-up)")
    p.add_argument("--trl-bf16", action="store_true", help="TRL with bf16=True (bf16 autocast over fp32 weights)")
    p.add_argument("--trainers", default="reasoner,trl")
    p.add_argument("--worker", choices=("reasoner", "trl"), help=argparse.SUPPRESS)
    p.add_argument("--json", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.case not in CASES:
        p.error(f"unknown case {a.case!r}; choose from {', '.join(CASES)}")
    if a.steps < 1:
        p.error("--steps must be at least 1")
    if a.worker:
        if a.worker == "reasoner":
            res = run_reasoner(a.case, a.steps, a.threads, a.set, a.config)
        else:
            res = run_trl(a.case, a.steps, a.threads, a.set, a.config, a.trl_bf16)
        Path(a.json).write_text(json.dumps(res))
        return 0
    model, B, G, T = CASES[a.case]
    results: dict[str, list[dict]] = {k: [] for k in a.trainers.split(",")}
    extra = (["--config", a.config] if a.config else []) + (["--trl-bf16"] if a.trl_bf16 else [])
    for seed in [int(s) for s in a.seeds.split(",") if s]:
        overrides = [f"run.seed={seed}", f"data.eval_size={a.eval_size}"] + a.set
        for kind in results:
            results[kind].append(spawn(kind, a.case, a.steps, a.threads, overrides, extra))
    what = f"recipe {a.config}" if a.config else f"model {model}, {B} prompts x {G} samples, max {T} new tokens"
    first_kind = next(iter(results))
    print(f"== same learning: {what}, {a.steps} steps, seeds {a.seeds}; held-out greedy accuracy on "
          f"{results[first_kind][0]['problems']} synthetic test problems" + ("; TRL bf16=True" if a.trl_bf16 else ""))
    print(f"{'trainer':10s} {'before':>7s} {'after':>7s} {'reward first10':>15s} {'reward last10':>14s} {'seconds':>8s}")
    mean = statistics.mean
    for kind, runs in results.items():
        first = mean(mean(r["rewards"][:10]) for r in runs)
        last = mean(mean(r["rewards"][-10:]) for r in runs)
        print(f"{kind:10s} {mean(r['before'] for r in runs):7.3f} {mean(r['after'] for r in runs):7.3f} "
              f"{first:15.3f} {last:14.3f} {mean(r['seconds'] for r in runs):8.1f}")
    for kind, runs in results.items():
        for key, what in (("", "its own evaluation"), ("_fp32", "float32 weights, the same function")):
            print(f"{kind} per seed (before -> after, gain), {what}: " + "  ".join(
                f"{r['before' + key]:.3f}->{r['after' + key]:.3f} ({100 * (r['after' + key] - r['before' + key]):+.1f})"
                for r in runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
