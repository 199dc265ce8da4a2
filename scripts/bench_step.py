"""One RL step, same work, reasoner vs TRL's GRPOTrainer: seconds, time split, tokens/s, RSS, MFU.

    python scripts/bench_step.py                      # tiny model, 8 prompts x 8 samples, 16 and 64 new tokens
    python scripts/bench_step.py --smollm2            # also SmolLM2-135M-Instruct, 4 x 8, 64 tokens (slow)
    python scripts/bench_step.py --cases tiny16 --steps 5 --warmup 2

Each trainer runs in its own subprocess (so peak RSS is its own; ``+kids`` adds the peak private
memory of each process it started, sampled from /proc: reasoner's reference process, both
trainers' math-verifier workers; the memory ratio compares RSS + kids) on the same prompts (the
synthetic train problems in ``reasoner.runtime.ProblemStream`` order), the same math verifier,
lr 1e-4, beta 0.04 (k3 KL in the loss), one PPO epoch, ``--threads`` torch threads for both; reasoner in
``--precision`` (model.precision, default fp32), TRL in fp32 (``trl``) or with its ``bf16=True`` (``trl-bf16``)
(reasoner gets ``run.threads`` explicitly, so its small-model 1-thread default does not apply; it
still runs each forward/backward whose biggest matmul is small on one of them, ``reasoner/threads.py``).
OpenMP's wait policy is each trainer's own unless ``--omp-wait-policy`` forces one on both: TRL's
(libgomp's spin-then-sleep) is its fastest on an idle machine, reasoner's PASSIVE survives busy cores.

* reasoner: the real ``reasoner.trainer.train`` (run.steps = warmup + steps); the time split is
  its ``time/*`` columns and the step wall time is the gap between consecutive metric rows. With
  its reference process (``reasoner/reference.py``, the tiny model), ``reference`` is the time the
  trainer spent handing the rollout over and waiting for the answer, not the child's own work.
* TRL: a real ``trl.GRPOTrainer`` (``build_trl``: loss_type grpo, scale_rewards group, KL bias
  correction off; lr, schedule (constant on both), AdamW betas, weight decay, grad clip and clip
  epsilons taken from the reasoner config); the step wall time is the gap
  between ``on_step_end`` callbacks, and generate / verify / reference are timed by wrapping its
  ``_generate``, ``_calculate_rewards`` and no-grad ``_get_per_token_logps_and_entropies``.

Medians are over the steps after the warm-up. Model FLOPs per step (the algorithm's work: one
prompt pass per group and one token pass per sampled token, a reference forward and a
forward+backward over them; prompts counted once per group; 2 FLOPs per matmul weight per token plus
attention) are divided by seconds x the matmul peak measured in this run with ``torch.mm``.
TRL is a benchmark-only dependency (``pip install trl==1.16.0``).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

CASES = {  # name: (model, prompts B, samples G, max new tokens T)
    "tiny16": ("tiny", 8, 8, 16),
    "tiny64": ("tiny", 8, 8, 64),
    "smollm2": ("smollm2", 4, 8, 64),
}
PHASES = ("generate", "verify", "reference", "update")


# ---------------------------------------------------------------- shared set-up


def make_config(case: str, steps: int, threads: int, out_dir: str, overrides: list[str] | None = None):
    from reasoner.config import load_config

    model, B, G, T = CASES[case]
    base = [f"model.name={model}", f"run.batch_size={B}", f"sampling.group_size={G}",
            f"sampling.max_new_tokens={T}", "optim.lr=1e-4", "optim.schedule=constant", "optim.warmup_steps=0",
            "algo.beta=0.04", "algo.ppo_epochs=1",
            "algo.minibatches=1", "model.precision=fp32", f"run.threads={threads}", f"run.steps={steps}",
            "run.device=cpu", "run.eval_every=0", "run.save_every=0", "run.log_samples_every=0",
            "run.progress=false", "data.eval_size=4", f"run.out_dir={out_dir}"]
    return load_config(None, base + list(overrides or []))


def step_problems(cfg, tokenizer):
    """(problems, prompts) of every step in the order reasoner.trainer.train draws them."""
    from reasoner import data, runtime

    train_set = data.load_problems(cfg.data.train, cfg.data.train_split, cfg.data)
    stream = runtime.ProblemStream(train_set, cfg.run.batch_size, cfg.data.seed)
    problems = [p for s in range(cfg.run.steps) for p in stream.batch(s)]
    return problems, [data.render(p, tokenizer, cfg.data) for p in problems]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


class ChildMemory:
    """Peak private memory (Private_Clean + Private_Dirty, MiB) of every descendant process, sampled
    from /proc every ``every`` seconds: reasoner's reference process, both trainers' math-verifier
    workers. Shared pages (a forked child's copy-on-write view of its parent) count in the parent only."""

    def __init__(self, every: float = 0.2):
        self.every, self.peak = every, {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            for pid in _descendants(os.getpid()):
                try:
                    lines = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
                except OSError:
                    continue
                kib = sum(int(x.split()[1]) for x in lines if x.startswith(("Private_Clean:", "Private_Dirty:")))
                self.peak[pid] = max(self.peak.get(pid, 0.0), kib / 1024)

    def stop(self) -> float:
        """Sum over the descendants of each one's peak private MiB."""
        self._stop.set()
        self._thread.join()
        return sum(self.peak.values())


def _descendants(pid: int) -> list[int]:
    kids = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            kids += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return kids + [d for k in kids for d in _descendants(k)]


def model_shape(model) -> dict:
    """Matmul weights (lm_head counted once, embeddings as lookups) and attention sizes."""
    import torch

    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    c = model.config
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    return {"matmul_params": linear, "layers": c.num_hidden_layers, "attn_dim": c.num_attention_heads * head_dim}


# ---------------------------------------------------------------- workers (one per subprocess)


def run_reasoner(case: str, steps: int, threads: int, overrides: list[str]) -> dict:
    import reasoner.trainer as trainer_mod
    from reasoner.metrics import MetricsLog

    stamps: list[float] = []
    log_row = MetricsLog.log

    def timed_log(self, row):  # one metric row per step: the gaps between rows are the step wall times
        stamps.append(time.perf_counter())
        log_row(self, row)

    MetricsLog.log = timed_log
    children = ChildMemory()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = make_config(case, steps, threads, tmp, overrides)
        trainer_mod.train(cfg)
        child_mb = children.stop()
        rows = [json.loads(line) for line in (Path(tmp) / "metrics.jsonl").read_text().splitlines()]
        from reasoner.models import load_model

        model, tok = load_model(cfg.model)
        _, prompts = step_problems(cfg, tok)
    rows = [r for r in rows if "time/generate" in r]
    walls = [b - a for a, b in zip(stamps, stamps[1:len(rows) + 1])]  # stamp 0 is the step-0 eval row
    B, G = cfg.run.batch_size, cfg.sampling.group_size
    return {"wall": walls, "split": {p: [r.get(f"time/{p}", 0.0) for r in rows] for p in PHASES},
            "completion_tokens": [r["length/mean"] * B * G for r in rows],
            "prompt_tokens": [len(tok(p, add_special_tokens=False)["input_ids"]) for p in prompts],
            "reward": [r["reward/mean"] for r in rows], "rss_mb": peak_rss_mb(), "child_mb": child_mb,
            "shape": model_shape(model)}


def trl_model_dir(cfg, tmp: str) -> str:
    """A save_pretrained directory holding exactly the weights reasoner loads (TRL reloads the ref)."""
    from reasoner.models import load_model, resolve

    src = resolve(cfg.model, cfg.data.synthetic_kinds)
    if src.gguf_file is None:
        return src.path
    model, tok = load_model(cfg.model, kinds=cfg.data.synthetic_kinds)
    model.save_pretrained(f"{tmp}/model")
    tok.save_pretrained(f"{tmp}/model")
    return f"{tmp}/model"


TRL_LOSS = {"seq_mean_token_mean": "grpo", "token_mean": "dapo", "seq_mean_token_sum_norm": "dr_grpo"}


def build_trl(case: str, steps: int, threads: int, overrides: list[str], bf16: bool = False, cfg=None):
    """(trainer, tokenizer, cfg, problems): a trl.GRPOTrainer set up for the same work as ``make_config``
    (or as ``cfg``, a reasoner config: its model, prompts, sampling, loss aggregation, optimizer and steps)."""
    import torch
    import trl
    from datasets import Dataset
    from transformers import AutoTokenizer

    from reasoner import verifiers
    from reasoner.models import prepare_tokenizer

    torch.set_num_threads(threads)
    tmp = tempfile.mkdtemp()
    cfg = cfg if cfg is not None else make_config(case, steps, threads, tmp, overrides)
    steps = cfg.run.steps
    path = trl_model_dir(cfg, tmp)
    tok = AutoTokenizer.from_pretrained(path)
    prepare_tokenizer(tok)
    problems, prompts = step_problems(cfg, tok)
    B, G, T = cfg.run.batch_size, cfg.sampling.group_size, cfg.sampling.max_new_tokens

    def math_reward(prompts, completions, idx, **kw):
        return [v.score for v in verifiers.score_all(completions, [problems[i] for i in idx])]

    o = cfg.optim
    args = trl.GRPOConfig(
        output_dir=tmp, per_device_train_batch_size=B * G, num_generations=G, max_completion_length=T,
        learning_rate=o.lr, beta=cfg.algo.beta, num_iterations=1, gradient_accumulation_steps=1,
        loss_type=TRL_LOSS[cfg.algo.loss_agg], scale_rewards="group", epsilon=cfg.algo.eps_low, epsilon_high=cfg.algo.eps_high,
        use_bias_correction_kl=False, temperature=cfg.sampling.temperature, top_p=cfg.sampling.top_p, top_k=0,
        max_grad_norm=o.grad_clip, adam_beta1=o.betas[0], adam_beta2=o.betas[1], weight_decay=o.weight_decay,
        lr_scheduler_type="constant_with_warmup" if o.schedule == "constant" and o.warmup_steps else o.schedule,
        warmup_steps=o.warmup_steps, max_steps=steps, shuffle_dataset=False,
        use_cpu=True, bf16=bf16, report_to=[], logging_steps=1, save_strategy="no", seed=cfg.run.seed,
        dataloader_num_workers=0, disable_tqdm=True)
    dataset = Dataset.from_dict({"prompt": prompts, "idx": list(range(len(prompts)))})
    trainer = trl.GRPOTrainer(model=path, reward_funcs=math_reward, args=args, train_dataset=dataset,
                              processing_class=tok)
    return trainer, tok, cfg, problems


def run_trl(case: str, steps: int, threads: int, overrides: list[str], bf16: bool = False) -> dict:
    from transformers import TrainerCallback

    trainer, tok, cfg, problems = build_trl(case, steps, threads, overrides, bf16)
    _, prompts = step_problems(cfg, tok)
    B, G = cfg.run.batch_size, cfg.sampling.group_size
    acc = {p: 0.0 for p in PHASES[:3]}
    timed(trainer, "_generate", acc, "generate")
    timed(trainer, "_calculate_rewards", acc, "verify")
    timed(trainer, "_get_per_token_logps_and_entropies", acc, "reference", only_no_grad=True)
    rec = {"stamps": [], "split": {p: [] for p in PHASES}, "completion_tokens": [], "reward": []}

    class Clock(TrainerCallback):
        def on_step_begin(self, *a, **k):
            acc.update({p: 0.0 for p in acc})

        def on_step_end(self, *a, **k):
            rec["stamps"].append(time.perf_counter())
            for p in PHASES[:3]:
                rec["split"][p].append(acc[p])

        def on_log(self, a, s, c, logs=None, **k):
            if logs and "completions/mean_length" in logs:
                rec["completion_tokens"].append(logs["completions/mean_length"] * B * G)
                rec["reward"].append(logs.get("reward", float("nan")))

    trainer.add_callback(Clock())
    children = ChildMemory()
    t0 = time.perf_counter()
    trainer.train()
    rec["child_mb"] = children.stop()
    stamps = [t0] + rec["stamps"]
    rec["wall"] = [b - a for a, b in zip(stamps, stamps[1:])]
    rec["split"]["update"] = [w - sum(rec["split"][p][i] for p in PHASES[:3]) for i, w in enumerate(rec["wall"])]
    rec["prompt_tokens"] = [len(tok(p, add_special_tokens=False)["input_ids"]) for p in prompts]
    rec.update(rss_mb=peak_rss_mb(), shape=model_shape(trainer.model))
    del rec["stamps"]
    return rec


def timed(obj, name: str, acc: dict, phase: str, only_no_grad: bool = False) -> None:
    import torch

    fn = getattr(obj, name)

    def wrapper(*a, **k):
        t0 = time.perf_counter()
        try:
            return fn(*a, **k)
        finally:
            if not only_no_grad or not torch.is_grad_enabled():
                acc[phase] += time.perf_counter() - t0

    setattr(obj, name, wrapper)


# ---------------------------------------------------------------- the parent: peak, FLOPs, table


def matmul_peak(threads: int, n: int = 1024, reps: int = 5, dtype: str = "float32") -> float:
    """Best torch.mm FLOP/s in ``dtype`` over a few repetitions on ``threads`` threads."""
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(n, n, dtype=getattr(torch, dtype)), torch.randn(n, n, dtype=getattr(torch, dtype))
    torch.mm(a, b)
    best = 0.0
    for _ in range(reps):
        t0 = time.perf_counter()
        torch.mm(a, b)
        best = max(best, 2 * n ** 3 / (time.perf_counter() - t0))
    return best


def step_flops(shape: dict, P: float, B: int, G: int, completion_tokens: float) -> float:
    """Model FLOPs of one step: the least work the maths needs, whoever computes it.

    B prompts of mean length P are encoded once per group (not once per sample), each of the
    completion_tokens is processed once per pass: sampling, the reference forward, and the
    policy forward + backward (x3). 2 FLOPs per matmul weight per token plus attention
    (QK^T and AV at the token's mean context). Redundant work (a prompt re-encoded G times,
    padding) is not counted, so it lowers a trainer's utilisation instead of inflating it.
    """
    W, L, A = shape["matmul_params"], shape["layers"], shape["attn_dim"]
    T = completion_tokens / (B * G)  # mean completion length
    per_tok = lambda ctx: 2 * W + 4 * L * A * ctx  # noqa: E731
    one_pass = B * P * per_tok(P / 2) + B * G * T * per_tok(P + T / 2)
    return one_pass * (1 + 1 + 3)


def summarize(res: dict, B: int, G: int, peak: float) -> dict:
    med = lambda xs: statistics.median(xs) if xs else float("nan")  # noqa: E731
    wall = med(res["wall"])
    toks = med(res["completion_tokens"])
    P = sum(res["prompt_tokens"]) / len(res["prompt_tokens"])
    flops = step_flops(res["shape"], P, B, G, toks)
    return {"s_per_step": wall, **{p: med(res["split"][p]) for p in PHASES}, "tokens_per_s": toks / wall,
            "rss_mb": res["rss_mb"], "child_mb": res["child_mb"], "mfu": flops / (wall * peak), "gflop_step": flops / 1e9,
            "reward": med(res["reward"]) if res["reward"] else float("nan")}


def pool(results: list[dict], warmup: int) -> dict:
    """One record from several runs: per-step lists without each run's warm-up, the largest RSS."""
    out = {"wall": [], "completion_tokens": [], "reward": [], "split": {p: [] for p in PHASES},
           "prompt_tokens": results[0]["prompt_tokens"], "shape": results[0]["shape"],
           "rss_mb": max(r["rss_mb"] for r in results), "child_mb": max(r["child_mb"] for r in results)}
    for r in results:
        out["wall"] += r["wall"][warmup:]
        out["completion_tokens"] += r["completion_tokens"][warmup:]
        out["reward"] += r["reward"][warmup:]
        for p in PHASES:
            out["split"][p] += r["split"][p][warmup:]
    return out


def spawn(kind: str, case: str, steps: int, threads: int, overrides: list[str], wait_policy: str,
          precision: str = "fp32") -> dict:
    with tempfile.NamedTemporaryFile(suffix=".json") as f:
        cmd = [sys.executable, __file__, "--worker", kind, "--cases", case, "--steps", str(steps), "--threads",
               str(threads), "--precision", precision, "--json", f.name] + [f"--set={o}" for o in overrides]
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false"}
        if wait_policy:  # same OpenMP setting for both trainers (see --omp-wait-policy)
            env["OMP_WAIT_POLICY"] = wait_policy
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if proc.returncode:
            raise RuntimeError(f"{kind} worker for {case} failed:\n{proc.stderr[-4000:]}")
        return json.loads(Path(f.name).read_text())


def wait_policy_of(kind: str, forced: str) -> str:
    inherited = forced or os.environ.get("OMP_WAIT_POLICY", "")
    if inherited:
        return inherited
    return "PASSIVE (set by reasoner)" if kind == "reasoner" else "unset (libgomp default)"


def print_table(case: str, rows: dict[str, dict], forced_policy: str) -> None:
    print(f"\n== {case}: model {CASES[case][0]}, {CASES[case][1]} prompts x {CASES[case][2]} samples, "
          f"max {CASES[case][3]} new tokens; OMP_WAIT_POLICY: "
          + ", ".join(f"{k} {wait_policy_of(k, forced_policy)}" for k in rows))
    head = f"{'trainer':10s} {'s/step':>8s} " + " ".join(f"{p:>9s}" for p in PHASES) + \
        f" {'tok/s':>8s} {'RSS MB':>8s} {'+kids':>6s} {'GFLOP':>7s} {'MFU':>7s} {'reward':>6s}"
    print(head)
    for name, s in rows.items():
        print(f"{name:10s} {s['s_per_step']:8.3f} " + " ".join(f"{s[p]:9.3f}" for p in PHASES) +
              f" {s['tokens_per_s']:8.0f} {s['rss_mb']:8.0f} {s['child_mb']:6.0f} {s['gflop_step']:7.2f} {s['mfu']:7.2%} {s['reward']:6.2f}")
    for peer in ("trl", "trl-bf16"):
        if "reasoner" in rows and peer in rows:
            r, t = rows["reasoner"], rows[peer]
            print(f"ratio reasoner/{peer}: time {r['s_per_step'] / t['s_per_step']:.2f}   peak memory (RSS + "
                  f"children's private) {(r['rss_mb'] + r['child_mb']) / (t['rss_mb'] + t['child_mb']):.2f}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", default="tiny16,tiny64", help=f"comma-separated: {', '.join(CASES)}")
    p.add_argument("--smollm2", action="store_true", help="add the SmolLM2-135M case (TRL takes ~1 min/step)")
    p.add_argument("--steps", type=int, default=8, help="steps per trainer, warm-up included")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--trainers", default="reasoner,trl",
                   help="reasoner, trl (fp32), trl-bf16 (TRL's bf16=True: bf16 autocast over fp32 weights)")
    p.add_argument("--precision", default="fp32", help="reasoner's model.precision (fp32 | bf16-mixed | bf16 | auto)")
    p.add_argument("--rounds", type=int, default=1, help="alternate the trainers this many times; medians pool all")
    p.add_argument("--omp-wait-policy", default="",
                   help="OMP_WAIT_POLICY forced on both workers; '' (default): each trainer as it comes, reasoner "
                        "with the PASSIVE it sets on import, TRL with libgomp's default (spin, then sleep), which is "
                        "TRL's faster setting on an idle machine and 10-100x slower on busy shared cores")
    p.add_argument("--set", action="append", default=[], help="extra reasoner config override key=value")
    p.add_argument("--worker", choices=("reasoner", "trl", "trl-bf16"), help=argparse.SUPPRESS)
    p.add_argument("--json", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    cases = [c for c in a.cases.split(",") if c] + (["smollm2"] if a.smollm2 and "smollm2" not in a.cases else [])
    for c in cases:
        if c not in CASES:
            p.error(f"unknown case {c!r}; choose from {', '.join(CASES)}")
    if a.steps <= a.warmup:
        p.error("--steps must exceed --warmup")
    if a.worker:
        if a.worker == "reasoner":
            res = run_reasoner(cases[0], a.steps, a.threads, [f"model.precision={a.precision}", *a.set])
        else:
            res = run_trl(cases[0], a.steps, a.threads, a.set, bf16=a.worker == "trl-bf16")
        Path(a.json).write_text(json.dumps(res))
        return 0
    peak, peak16 = matmul_peak(a.threads), matmul_peak(a.threads, dtype="bfloat16")
    print(f"measured matmul peak on {a.threads} threads: fp32 {peak / 1e9:.1f} GFLOP/s, bf16 {peak16 / 1e9:.1f} "
          f"GFLOP/s (MFU is against the peak of the dtype each trainer computes in); reasoner model.precision="
          f"{a.precision}; {a.steps} steps each, medians over the last {a.steps - a.warmup}")
    for case in cases:
        runs: dict[str, list[dict]] = {k: [] for k in a.trainers.split(",")}
        for _ in range(a.rounds):
            for kind in runs:
                runs[kind].append(spawn(kind, case, a.steps, a.threads, a.set if kind == "reasoner" else [],
                                        a.omp_wait_policy, a.precision))
        bf16 = {"reasoner": a.precision != "fp32", "trl": False, "trl-bf16": True}
        rows = {kind: summarize(pool(rs, a.warmup), CASES[case][1], CASES[case][2], peak16 if bf16[kind] else peak)
                for kind, rs in runs.items()}
        print_table(case, rows, a.omp_wait_policy)
    return 0


if __name__ == "__main__":
    sys.exit(main())
