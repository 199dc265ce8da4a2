"""Sample n completions per problem, verify, aggregate, write every result.

``evaluate`` is one pass over one problem set (what the trainer calls every N steps);
``run_suites`` runs the full protocol (greedy pass + one sampled pass per seed, per suite)
and writes ``results.json``, ``completions.jsonl``, ``results.md`` and ``pass_at_k.png``.
"""
from __future__ import annotations

import json
import platform
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Sequence

from reasoner import verifiers
from reasoner import seeds
from reasoner.sampler import SamplingParams
from reasoner.types import Problem

from .metrics import Equivalent, answer_classes, default_k_list, maj_at_k_classes, mean_std, pass_at_k
from .suites import Protocol, Suite, load_suite, resolve_suite

MATH_FREE = ("code",)  # verifiers whose answers are not voted on (no maj@k)


@dataclass
class EvalResult:
    metrics: dict[str, float]  # flat: accuracy, avg@n, pass@k, maj@k, status/*, time/*, completions_per_s
    records: list[dict[str, Any]] = field(default_factory=list)  # one per completion


def evaluate(sampler: Any, problems: Sequence[Problem], prompts: Sequence[str], *, n: int = 1,
             temperature: float = 0.0, top_p: float = 1.0, max_new_tokens: int = 256, seed: int = 0,
             k_list: Sequence[int] | None = None, batch_size: int = 64,
             equivalent: Equivalent | None = None, top_k: int = 0, min_p: float = 0.0,
             stop: Sequence[str] = ()) -> EvalResult:
    """Sample ``n`` completions per problem (``temperature=0``: greedy), score them, aggregate.

    top_k, min_p, stop: as ``SamplingParams`` (off by default); stop strings end greedy completions too."""
    if len(problems) != len(prompts) or not problems:
        raise ValueError(f"need as many prompts as problems (> 0), got {len(prompts)} and {len(problems)}")
    per_call = max(1, batch_size // n)
    records: list[dict[str, Any]] = []
    t_gen = t_ver = 0.0
    for start in range(0, len(problems), per_call):
        chunk = list(problems[start:start + per_call])
        params = SamplingParams(n=n, temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens,
                                seed=seeds.sampling(seed, start), top_k=top_k, min_p=min_p, stop=tuple(stop))
        t0 = time.perf_counter()
        roll = sampler.generate(list(prompts[start:start + per_call]), params)
        t1 = time.perf_counter()
        expanded = [p for p in chunk for _ in range(n)]
        verdicts = verifiers.score_all(roll.texts, expanded)
        t2 = time.perf_counter()
        t_gen, t_ver = t_gen + t1 - t0, t_ver + t2 - t1
        lengths, truncated = roll.lengths.tolist(), roll.truncated.tolist()
        for i, (p, text, v) in enumerate(zip(expanded, roll.texts, verdicts)):
            records.append({"problem_id": p.id, "sample": i % n, "gold": p.answer, "completion": text,
                            "answer": v.answer, "status": v.status, "score": float(v.score), "detail": v.detail,
                            "tokens": int(lengths[i]), "truncated": bool(truncated[i])})
    metrics = aggregate(records, problems, n, k_list or default_k_list(n), equivalent)
    total = t_gen + t_ver
    metrics.update({"time/generate_s": t_gen, "time/verify_s": t_ver, "time/total_s": total,
                    "completions_per_s": len(records) / total if total > 0 else 0.0,
                    "verify_share": t_ver / total if total > 0 else 0.0})
    return EvalResult(metrics, records)


def aggregate(records: list[dict[str, Any]], problems: Sequence[Problem], n: int, k_list: Sequence[int],
              equivalent: Equivalent | None = None) -> dict[str, float]:
    """Flat metrics from per-completion records (n per problem, problem-major)."""
    correct = [r["status"] == "correct" for r in records]
    m: dict[str, float] = {"num_problems": float(len(problems)), "num_completions": float(len(records)),
                           "accuracy": sum(correct) / len(records),
                           "score": sum(r["score"] for r in records) / len(records),
                           "truncated_frac": sum(r["truncated"] for r in records) / len(records),
                           "length_mean": sum(r["tokens"] for r in records) / len(records)}
    for s in verifiers.STATUSES:
        m[f"status/{s}"] = sum(r["status"] == s for r in records) / len(records)
    groups = [(p, records[i * n:(i + 1) * n], correct[i * n:(i + 1) * n]) for i, p in enumerate(problems)]
    m[f"avg@{n}"] = sum(sum(c) / n for _, _, c in groups) / len(groups)
    for k in k_list:
        m[f"pass@{k}"] = sum(pass_at_k(n, sum(c), k) for _, _, c in groups) / len(groups)
    voted = [(answer_classes([r["answer"] for r in recs], c, equivalent)) for p, recs, c in groups
             if p.verifier not in MATH_FREE]
    if voted and n > 1:
        for k in k_list:
            m[f"maj@{k}"] = sum(maj_at_k_classes(cl, none, k) for cl, none in voted) / len(voted)
    return m


# ---------------------------------------------------------------- the full protocol

def run_suites(sampler: Any, tokenizer: Any, suites: Sequence[str], data_cfg: Any, protocol: Protocol,
               out_dir: str | Path, model: str = "", log: Callable[[str], None] = print,
               equivalent: Equivalent | None = None, loaded: dict[str, tuple[Suite, list]] | None = None
               ) -> dict[str, Any]:
    """Greedy pass + one sampled pass per seed for every suite; writes all outputs to ``out_dir``.

    ``loaded`` (from ``load_suites``) lets a caller load the data before the model."""
    from reasoner.data import render_all

    protocol.validate()
    cfg = eval_data_cfg(data_cfg, protocol)
    loaded = loaded if loaded is not None else load_suites(suites, data_cfg, protocol)  # all data before any sampling
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    k_list = protocol.k_list or default_k_list(protocol.n)
    results: dict[str, Any] = {"protocol": protocol_record(model, suites, protocol, k_list, cfg), "suites": {}}
    timing = {"completions": 0, "generate_s": 0.0, "verify_s": 0.0}
    with open(out / "completions.jsonl", "w", encoding="utf-8") as comp:
        for suite, problems in loaded.values():
            prompts = render_all(problems, tokenizer, cfg)
            entry = _run_one(sampler, suite, problems, prompts, protocol, k_list, comp, timing, equivalent)
            entry["example_prompt"] = prompts[0]
            results["suites"][suite.name] = entry
            log(suite_line(suite.name, entry, protocol.n))
    total = timing["generate_s"] + timing["verify_s"]
    results["timing"] = {**timing, "completions_per_s": timing["completions"] / total if total else 0.0,
                         "verify_share": timing["verify_s"] / total if total else 0.0}
    log(f"{timing['completions']} completions, {results['timing']['completions_per_s']:.1f} completions/s, "
        f"{100 * results['timing']['verify_share']:.1f}% of the time in verification")
    write_outputs(results, out, protocol.n, k_list)
    return results


def eval_data_cfg(data_cfg: Any, protocol: Protocol) -> Any:
    """The data config with the protocol's prompt settings (template, instruction, ...)."""
    import dataclasses

    return dataclasses.replace(data_cfg, template=protocol.template, instruction=protocol.instruction,
                               system_prompt=protocol.system_prompt, few_shot=protocol.few_shot)


def load_suites(suites: Sequence[str], data_cfg: Any, protocol: Protocol) -> dict[str, tuple[Suite, list]]:
    """Every suite's problems, loaded up front so that a data error stops the run before sampling."""
    cfg = eval_data_cfg(data_cfg, protocol)
    out = {}
    for spec in suites:
        suite = resolve_suite(spec)
        out[suite.name] = (suite, load_suite(suite, cfg, protocol.limit))
    return out


def _run_one(sampler, suite: Suite, problems, prompts, protocol: Protocol, k_list, comp, timing,
             equivalent) -> dict[str, Any]:
    entry: dict[str, Any] = {"dataset": suite.dataset, "split": suite.split, "num_problems": len(problems)}
    passes = ([("greedy", 0, 1, 0.0, 1.0)] if protocol.greedy else []) + [
        ("sampled", s, protocol.n, protocol.temperature, protocol.top_p) for s in protocol.seeds]
    per_seed = {}
    for mode, seed, n, temp, top_p in passes:
        res = evaluate(sampler, problems, prompts, n=n, temperature=temp, top_p=top_p,
                       max_new_tokens=protocol.max_new_tokens, seed=seed, batch_size=protocol.batch_size,
                       k_list=[1] if mode == "greedy" else k_list, equivalent=equivalent)
        for r in res.records:
            comp.write(json.dumps({"suite": suite.name, "mode": mode, "seed": seed, **r}, ensure_ascii=False) + "\n")
        timing["completions"] += len(res.records)
        timing["generate_s"] += res.metrics["time/generate_s"]
        timing["verify_s"] += res.metrics["time/verify_s"]
        if mode == "greedy":
            entry["greedy"] = res.metrics
        else:
            per_seed[str(seed)] = res.metrics
    entry["seeds"] = per_seed
    entry["mean"], entry["std"] = {}, {}
    for key in per_seed[str(protocol.seeds[0])]:
        entry["mean"][key], entry["std"][key] = mean_std([m[key] for m in per_seed.values()])
    return entry


def protocol_record(model: str, suites: Sequence[str], p: Protocol, k_list: Sequence[int], cfg: Any) -> dict:
    return {"model": model, "suites": list(suites), **asdict(p), "k_list": list(k_list),
            "data_dir": getattr(cfg, "data_dir", None), "date": datetime.now(timezone.utc).isoformat(),
            "versions": versions(), "greedy_protocol": {"n": 1, "temperature": 0.0, "top_p": 1.0}}


def versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "platform": platform.platform()}
    for pkg in ("reasoner", "torch", "transformers", "datasets", "math-verify", "sympy", "numpy", "vllm"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def suite_line(name: str, entry: dict[str, Any], n: int) -> str:
    mean, std = entry["mean"], entry["std"]
    parts = [f"{name} ({entry['num_problems']} problems):"]
    if "greedy" in entry:
        parts.append(f"greedy {100 * entry['greedy']['accuracy']:.1f}")
    for key in (f"avg@{n}", f"maj@{n}", f"pass@{n}"):
        if key in mean:
            parts.append(f"{key} {100 * mean[key]:.1f}±{100 * std[key]:.1f}")
    parts.append(f"| {mean['completions_per_s']:.1f} completions/s, verify {100 * mean['verify_share']:.1f}% of time")
    return " ".join(parts)


# ---------------------------------------------------------------- files

def write_outputs(results: dict[str, Any], out: Path, n: int, k_list: Sequence[int]) -> None:
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str), encoding="utf-8")
    (out / "results.md").write_text(markdown_table(results, n, k_list), encoding="utf-8")
    plot_pass_at_k(results, k_list, out / "pass_at_k.png")


def markdown_table(results: dict[str, Any], n: int, k_list: Sequence[int]) -> str:
    p = results["protocol"]
    cols = ["greedy", f"avg@{n}", f"maj@{n}"] + [f"pass@{k}" for k in k_list]
    lines = [f"# {p['model'] or 'model'}: {', '.join(p['suites'])}", "",
             f"n={n}, temperature={p['temperature']}, top_p={p['top_p']}, max_new_tokens={p['max_new_tokens']}, "
             f"seeds={p['seeds']}, template={p['template']}; mean ± std over seeds, in %.", "",
             "| suite | problems | " + " | ".join(cols) + " |", "|---" * (len(cols) + 2) + "|"]
    for name, e in results["suites"].items():
        cells = [f"{100 * e['greedy']['accuracy']:.1f}" if "greedy" in e else "-"]
        for c in cols[1:]:
            cells.append(f"{100 * e['mean'][c]:.1f} ± {100 * e['std'][c]:.1f}" if c in e["mean"] else "-")
        lines.append(f"| {name} | {e['num_problems']} | " + " | ".join(cells) + " |")
    t = results.get("timing", {})
    lines += ["", f"{t.get('completions', 0)} completions, {t.get('completions_per_s', 0):.1f}/s, "
                  f"{100 * t.get('verify_share', 0):.1f}% of the time in verification."]
    return "\n".join(lines) + "\n"


def plot_pass_at_k(results: dict[str, Any], k_list: Sequence[int], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, e in results["suites"].items():
        ys = [100 * e["mean"][f"pass@{k}"] for k in k_list]
        errs = [100 * e["std"][f"pass@{k}"] for k in k_list]
        ax.errorbar(list(k_list), ys, yerr=errs, marker="o", capsize=3, label=name)
    ax.set_xscale("log", base=2)
    ax.set_xticks(list(k_list), [str(k) for k in k_list])
    ax.set_xlabel("k")
    ax.set_ylabel("pass@k (%)")
    ax.set_title(f"pass@k ({results['protocol']['model'] or 'model'})")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ---------------------------------------------------------------- during training

@dataclass
class TrainingEval:
    """What the trainer logs at step 0, every ``run.eval_every`` steps and at the end.

    The held-out set: ``eval/accuracy`` (greedy) and, with ``samples`` > 0, ``eval/sampled_accuracy``
    (avg@samples at the training temperature). Each suite of ``run.eval_suites``: ``eval/<suite>/accuracy``
    and, with ``samples`` > 0, ``eval/<suite>/avg@n`` and ``eval/<suite>/pass@n``.
    """

    sampler: Any
    heldout: tuple[Sequence[Problem], Sequence[str]]  # (problems, prompts)
    suites: dict[str, tuple[Sequence[Problem], Sequence[str]]]  # spec -> (problems, prompts)
    max_new_tokens: int
    samples: int = 0  # run.eval_samples
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 0  # run.seed
    top_k: int = 0  # sampling.top_k, sampling.min_p: the sampled passes' processing, as in training
    min_p: float = 0.0
    stop: tuple[str, ...] = ()  # sampling.stop: ends the greedy and the sampled completions alike

    def _greedy(self, problems, prompts) -> float:
        return evaluate(self.sampler, problems, prompts, n=1, temperature=0.0, max_new_tokens=self.max_new_tokens,
                        stop=self.stop).metrics["accuracy"]

    def _sampled(self, problems, prompts, step: int, **kw) -> dict[str, float]:
        n = self.samples
        return evaluate(self.sampler, problems, prompts, n=n, temperature=self.temperature, top_p=self.top_p,
                        max_new_tokens=self.max_new_tokens, seed=seeds.eval_sampling(self.seed, step),
                        top_k=self.top_k, min_p=self.min_p, stop=self.stop, **kw).metrics

    def __call__(self, step: int) -> dict[str, float]:
        row = {"eval/accuracy": self._greedy(*self.heldout)}
        if self.samples:
            row["eval/sampled_accuracy"] = self._sampled(*self.heldout, step)[f"avg@{self.samples}"]
        for spec, (problems, prompts) in self.suites.items():
            row[f"eval/{spec}/accuracy"] = self._greedy(problems, prompts)
            if self.samples:
                m, n = self._sampled(problems, prompts, step, k_list=[1, self.samples]), self.samples
                row[f"eval/{spec}/avg@{n}"], row[f"eval/{spec}/pass@{n}"] = m[f"avg@{n}"], m[f"pass@{n}"]
        return row

