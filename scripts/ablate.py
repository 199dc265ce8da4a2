"""Ablation: the embedded default run with each algorithm preset, same steps and seeds.

    python scripts/ablate.py [--steps 100] [--seeds 0 1] [--presets grpo dr_grpo dapo rloo justrl]
                             [--out runs/ablate] [--set run.batch_size=8 ...] [--reuse]

Each (preset, seed) trains with ``reasoner.trainer.train(load_config(None, [...]))`` into
``<out>/<preset>-seed<seed>``. Then for each run: held-out greedy accuracy before and after,
task reward (verifier score) and response length averaged over the last quarter of the steps,
the in-training KL where the preset has a reference (beta > 0), and the KL drift of the final
policy from the starting model, measured the same way for every preset (k3 per token on
completions the final policy samples for held-out prompts). Writes ``<out>/ablation.csv``
(one row per run), ``<out>/ablation.md`` (mean +- std over seeds per preset) and
``<out>/ablation.png`` (accuracy, reward, length curves and KL drift per preset).
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import statistics
import sys
from dataclasses import replace
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from reasoner import data, runtime  # noqa: E402
from reasoner.build import sampling_params  # noqa: E402
from reasoner.config import Config, load_config  # noqa: E402
from reasoner.logprobs import completion_logp  # noqa: E402
from reasoner.losses import KL_ESTIMATORS  # noqa: E402
from reasoner.models import load_model  # noqa: E402
from reasoner.presets import PRESETS  # noqa: E402
from reasoner.sampler.transformers import TransformersSampler  # noqa: E402
from reasoner.trainer import train  # noqa: E402

COLUMNS = ("acc_before", "acc_after", "reward", "length", "kl_train", "kl_drift", "seconds")


def run_one(preset: str, seed: int, args) -> Path:
    out = Path(args.out) / f"{preset}-seed{seed}"
    if args.reuse and (out / "summary.json").is_file():
        return out
    eval_every = args.eval_every if args.eval_every is not None else max(args.steps // 5, 1)
    cfg = load_config(None, [f"algo.preset={preset}", f"run.seed={seed}", f"run.steps={args.steps}",
                             f"run.out_dir={out}", f"run.eval_every={eval_every}", "run.progress=false",
                             f"run.save_every={args.steps}", *args.set])
    train(cfg)
    return out


@torch.no_grad()
def kl_drift(cfg: Config, final_dir: Path, n_prompts: int, group: int) -> float:
    """Mean per-token k3 KL(final || start) on completions the final policy samples for held-out prompts."""
    device = runtime.pick_device(cfg.run.device)
    start, tok = load_model(cfg.model, device=str(device), kinds=cfg.data.synthetic_kinds)
    final, _ = load_model(replace(cfg.model, name=str(final_dir)), device=str(device), kinds=cfg.data.synthetic_kinds)
    problems = data.load_problems(cfg.data.eval, cfg.data.eval_split, cfg.data)[:n_prompts]
    prompts = [data.render(p, tok, cfg.data) for p in problems]
    params = replace(sampling_params(cfg.sampling), n=group, seed=cfg.run.seed)
    roll = TransformersSampler(final, tok, device=device).generate(prompts, params)
    args = (roll.prompt_ids, roll.prompt_mask, roll.completion_ids, roll.completion_mask, cfg.sampling.temperature)
    logp_final, logp_start = completion_logp(final, *args)[0], completion_logp(start, *args)[0]
    kl = KL_ESTIMATORS.get("k3")(logp_final, logp_start)
    return float(kl[roll.completion_mask].mean())


def _tail_mean(rows: list[dict], key: str) -> float:
    vals = [r[key] for r in rows if r["step"] > 0 and isinstance(r.get(key), (int, float))]
    vals = vals[-max(len(vals) // 4, 1):]
    return statistics.fmean(vals) if vals else math.nan


def summarize(preset: str, seed: int, out: Path, args) -> dict:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    summary = json.loads((out / "summary.json").read_text())
    cfg = load_config(out / "config.yaml")
    return {"preset": preset, "seed": seed, "acc_before": summary["heldout_accuracy_before"],
            "acc_after": summary["heldout_accuracy_after"], "reward": _tail_mean(rows, "reward/mean"),
            "length": _tail_mean(rows, "length/mean"), "kl_train": _tail_mean(rows, "loss/kl"),
            "kl_drift": kl_drift(cfg, out / "final", args.drift_prompts, args.drift_group),
            "seconds": summary["seconds"], "run_dir": str(out)}


def _fmt(vals: list[float]) -> str:
    vals = [v for v in vals if not math.isnan(v)]
    if not vals:
        return "n/a"
    m = statistics.fmean(vals)
    digits = 4 if abs(m) < 0.01 else 3
    return f"{m:.{digits}f}" if len(vals) == 1 else f"{m:.{digits}f} ± {statistics.stdev(vals):.{digits}f}"


def write_tables(results: list[dict], out: Path, args) -> str:
    with (out / "ablation.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(results[0]))
        w.writeheader()
        w.writerows(results)
    lines = [f"Presets on the default config, {args.steps} steps, seeds {' '.join(map(str, args.seeds))} "
             f"(mean ± std over seeds); overrides: {' '.join(args.set) or 'none'}", "",
             "| preset | " + " | ".join(COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    for preset in args.presets:
        rs = [r for r in results if r["preset"] == preset]
        lines.append(f"| {preset} | " + " | ".join(_fmt([r[c] for r in rs]) for c in COLUMNS) + " |")
    lines += ["", "acc_*: held-out greedy accuracy before/after training; reward: verifier score and length: "
              "completion tokens, both averaged over the last quarter of the steps; kl_train: the trainer's "
              "k3 KL to its reference (only presets with beta > 0); kl_drift: k3 KL of the final policy from "
              "the starting model on held-out prompts, the same measurement for every preset."]
    text = "\n".join(lines) + "\n"
    (out / "ablation.md").write_text(text)
    return text


def _curve(run_dirs: list[Path], key: str, smooth: int) -> tuple[list[int], list[float]]:
    """The mean over seeds of ``key`` by step, with a trailing moving average of ``smooth`` points."""
    by_step: dict[int, list[float]] = {}
    for d in run_dirs:
        for r in map(json.loads, (d / "metrics.jsonl").read_text().splitlines()):
            if isinstance(r.get(key), (int, float)) and not (key != "eval/accuracy" and r["step"] == 0):
                by_step.setdefault(r["step"], []).append(r[key])
    steps = sorted(by_step)
    ys = [statistics.fmean(by_step[s]) for s in steps]
    ys = [statistics.fmean(ys[max(0, i - smooth + 1):i + 1]) for i in range(len(ys))]
    return steps, ys


def plot(results: list[dict], out: Path, args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(17, 3.6))
    smooth = max(args.steps // 10, 1)
    for preset in args.presets:
        dirs = [Path(r["run_dir"]) for r in results if r["preset"] == preset]
        for ax, key in zip(axes[:3], ("eval/accuracy", "reward/mean", "length/mean")):
            xs, ys = _curve(dirs, key, 1 if key == "eval/accuracy" else smooth)
            ax.plot(xs, ys, label=preset, marker="o" if key == "eval/accuracy" else None, markersize=3)
    for ax, title in zip(axes[:3], ("held-out accuracy (greedy)", f"reward (moving avg {smooth})",
                                    f"length, tokens (moving avg {smooth})")):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step")
    drift = [[r["kl_drift"] for r in results if r["preset"] == p] for p in args.presets]
    axes[3].bar(args.presets, [statistics.fmean(d) for d in drift],
                yerr=[statistics.stdev(d) if len(d) > 1 else 0 for d in drift], capsize=3)
    axes[3].set_title("KL of final policy from start (k3/token)", fontsize=10)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "ablation.png", dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--presets", nargs="+", default=PRESETS.names(), choices=PRESETS.names())
    ap.add_argument("--out", default="runs/ablate")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="extra config overrides for every run")
    ap.add_argument("--eval-every", type=int, default=None, help="default: steps // 5")
    ap.add_argument("--drift-prompts", type=int, default=64)
    ap.add_argument("--drift-group", type=int, default=4)
    ap.add_argument("--reuse", action="store_true", help="keep runs that already have a summary.json")
    args = ap.parse_args(argv)
    if args.steps < 1:
        ap.error("--steps must be >= 1")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for preset in args.presets:
        for seed in args.seeds:
            print(f"=== {preset} seed {seed}", flush=True)
            results.append(summarize(preset, seed, run_one(preset, seed, args), args))
    print(write_tables(results, out, args))
    plot(results, out, args)
    print(f"wrote {out / 'ablation.csv'}, {out / 'ablation.md'}, {out / 'ablation.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
