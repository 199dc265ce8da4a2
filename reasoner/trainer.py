"""The training loop: problems -> sampler -> verifiers -> advantages -> loss -> update -> eval."""
from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import torch
from tqdm import tqdm

import verifiers
from reasoner import checkpoint, data, distributed, dynamic, runtime
from reasoner.advantages import ADVANTAGES, frac_zero_std_groups
from reasoner.config import Config, ConfigError, save_config
from reasoner.data.overlap import warn_overlap
from reasoner.losses import KL_ESTIMATORS
from reasoner.metrics import log_samples, truncate_samples
from reasoner.models import load_model
from reasoner.optim import Optimizer
from reasoner.reference import logp_of, make_runner, rollout_inputs
from reasoner.sampler import SamplingParams
from reasoner.update import UpdateBatch, ppo_update


def train(cfg: Config) -> dict:
    """Train a policy with RL from verifiable rewards; return the run summary.

    1. Prepare the run directory (config.yaml), seeds and device (threads in step 3, by model size).
    2. Load the problems (train and held-out) and render their prompts.
    3. Load the policy, the reference (only when beta > 0), the critic (only for algo.advantage=gae,
       reasoner.critic; checkpointed with the trainer state), the sampler and the optimizer.
    4. Resume from a checkpoint when asked.
    5. Evaluate the held-out set before training.
    6. Each step: (a) take B problems, (b) sample G completions each, (c) score them,
       (d) reference log-probs (reasoner.reference: here, or in a child process while (f) runs its forward),
       (e) advantages, (f) PPO update, (g) log; evaluate every
       run.eval_every steps and checkpoint every run.save_every steps.
    7. Evaluate again, save the final model, write summary.json, the CSV and the plot.
    """
    # 1. prepare (config checks before any model is loaded; under torchrun, join the process group)
    device, dd = runtime.setup(cfg)
    out = Path(cfg.run.out_dir)
    if dd.is_main:
        checkpoint.prepare_run_dir(out, cfg.run.resume, cfg.run.overwrite)  # writable; not another run's; no stale tmp
        save_config(cfg, out / "config.yaml")
    stop = _StopAtStep(active=dd.world == 1)  # before any fork: children leave SIGINT to this process
    if not sys.stderr.isatty():
        _quiet_progress_bars()  # a log file: no carriage-return bars from transformers and the hub
    t_start = time.perf_counter()

    # 2. problems
    train_set = data.load_problems(cfg.data.train, cfg.data.train_split, cfg.data)
    eval_set = data.load_problems(cfg.data.eval, cfg.data.eval_split, cfg.data)
    eval_set = eval_set[: cfg.data.eval_size] if cfg.data.eval_size else eval_set
    _check_problems(train_set, eval_set, cfg)  # empty train set, unknown verifiers: before any model loads
    warn_overlap(train_set, {cfg.data.eval: eval_set})
    isolation = _check_sandbox(train_set + eval_set, cfg)

    # 3. models
    model, tok = load_model(cfg.model, device=str(device), kinds=cfg.data.synthetic_kinds)
    model, prec = runtime.prepare_policy(model, cfg, device)  # precision, threads, gradient checkpointing, LoRA
    ref = runtime.make_reference(model, cfg)  # before wrapping: FSDP2 shards in place
    reference = make_runner(ref, cfg, device)  # here, or a forked child beside the policy (reasoner.reference)
    critic = runtime.make_critic(model, cfg)  # None unless algo.advantage=gae
    policy = distributed.wrap(model, cfg.run.parallel)  # DDP/FSDP2 under torchrun
    sampler = runtime.make_sampler(model, tok, cfg, device)
    opt = Optimizer(model, cfg.optim, cfg.run.steps, master=prec.master)  # AdamW + schedule, fp32 masters
    render = lambda p: data.render(p, tok, cfg.data)  # noqa: E731
    eval_prompts = [render(p) for p in eval_set]
    stream = runtime.ProblemStream(train_set, cfg.run.batch_size, cfg.data.seed, dd.rank, dd.world)
    log, start, beta = distributed.metrics_log(out), 0, cfg.algo.beta

    # 4. resume
    ckpt = checkpoint.find_resume(out, cfg.run.resume)
    if ckpt is not None and runtime.sharded(cfg):  # full weights into DTensors, rank 0's optimizer shard: not yet
        raise ConfigError(f"run.resume={cfg.run.resume}: resuming a run.parallel=fsdp run under torchrun is not "
                          "supported yet (its optimizer state is sharded per rank); use run.parallel=ddp for runs "
                          "that must resume")
    if ckpt is not None:
        state = checkpoint.load_state(ckpt)
        checkpoint.load_weights(model, ckpt, prec.compute, device)
        opt.load_state_dict(state["optim"])  # also the float32 masters under bf16-mixed
        start, beta = state["step"], state["beta"]
        if critic is not None:
            critic.load_checkpoint_state(state["critic"])
        log = distributed.metrics_log(out, state["metrics"])
        sampler.sync_weights(model)
        print(f"[rank {dd.rank}] resumed from {ckpt} at step {start}")
    elif cfg.run.resume == "auto" and dd.is_main:
        print(f"--resume auto: no checkpoint in {out / 'checkpoints'}; starting a fresh run")
    if dd.is_main:
        truncate_samples(out / "samples.jsonl", start)  # rows past the resumed step are written again

    # 5. evaluate before training
    if start == 0:
        log.log({"step": 0, **evaluate(sampler, eval_set, eval_prompts, cfg, step=0)})
    before = log.rows[0].get("eval/accuracy", float("nan")) if log.rows else float("nan")

    # 6. the loop
    bad_steps, G = 0, cfg.sampling.group_size
    tty, shown_error = sys.stderr.isatty(), False
    bar = tqdm(range(start, cfg.run.steps), initial=start, total=cfg.run.steps,
               disable=not (cfg.run.progress and dd.is_main and tty), dynamic_ncols=True)
    plain_every = max(1, cfg.run.steps // 20) if cfg.run.progress and dd.is_main and not tty else 0  # a log file
    for step in stop.steps(bar):
        t = {}
        # (a)-(c) problems, sample, score, shape rewards; dynamic sampling refills dropped groups
        params = SamplingParams(n=G, temperature=cfg.sampling.temperature, top_p=cfg.sampling.top_p,
                                max_new_tokens=cfg.sampling.max_new_tokens,
                                seed=cfg.run.seed * 1_000_003 + step + 7_919 * dd.rank)
        sc, shaped = dynamic.collect(stream, step, render, sampler, params, cfg, t)
        prompts, roll, verdicts, scores = sc.prompts, sc.roll, sc.verdicts, sc.scores
        shown_error = shown_error or (dd.is_main and _report_errors(verdicts, step + 1))
        # (d) reference (and old) log-probs; a reference process works while the update's forward runs
        t0 = time.perf_counter()
        ref_logp = reference.start(roll) if reference is not None else None  # Pending: call for [N, T]
        old_logp, tis = _old_logp(model, roll, cfg, device)
        t["reference"] = time.perf_counter() - t0
        # (e) advantages
        rewards = sc.rewards.clone()  # [N] scores + weighted extra rewards + overlong punishment
        if critic is not None:  # gae: per-token advantages [N, T] from the critic's values
            adv, returns, old_v = critic.advantages(roll, rewards, ref_logp() if cfg.algo.kl_in == "reward" else None,
                                                    beta, cfg)
        else:
            if ref_logp is not None and cfg.algo.kl_in == "reward":
                kl = KL_ESTIMATORS.get(cfg.algo.kl_estimator)(roll.logp, ref_logp()) * roll.completion_mask
                rewards = rewards - beta * kl.sum(-1)
            adv = ADVANTAGES.get(cfg.algo.advantage)(rewards.view(-1, G), cfg.algo).reshape(-1)  # [B, G] -> [N]
        # (f) update
        t0 = time.perf_counter()
        in_loss = cfg.algo.kl_in == "loss"
        step_cfg = replace(cfg, algo=replace(cfg.algo, beta=beta if in_loss else 0.0))
        upd = ppo_update(policy, opt, UpdateBatch(roll, adv, old_logp, ref_logp if in_loss else None, tis),
                         step_cfg, device, runtime.step_generator(cfg.run.seed, step))
        upd.update(critic.update(roll, returns, old_v, cfg) if critic is not None else {})
        beta = _adapt_beta(beta, upd.get("loss/kl", 0.0), cfg)
        opt.schedule_step()
        sampler.sync_weights(model)
        waited = ref_logp.waited if ref_logp is not None else 0.0  # blocked on the reference: its time, not the update's
        t["update"], t["reference"] = time.perf_counter() - t0 - waited, t["reference"] + waited
        # (g) log
        row = _step_row(step + 1, roll, verdicts, scores.view(-1, G), upd, t, opt, beta)
        row = distributed.reduce_metrics({**row, **shaped})  # shaped: reward/<name>, reward/total, dynamic/*
        bad_steps = bad_steps + 1 if upd["update/skipped"] else 0
        if dd.is_main and cfg.run.log_samples_every and step % cfg.run.log_samples_every == 0:
            log_samples(out / "samples.jsonl", step + 1, prompts, roll.texts, scores.tolist(),
                        [v.status for v in verdicts], G, details=[v.detail for v in verdicts])
        if cfg.run.eval_every and (step + 1) % cfg.run.eval_every == 0 and step + 1 < cfg.run.steps:
            row.update(evaluate(sampler, eval_set, eval_prompts, cfg, step=step + 1))
        log.log(row)
        bar.set_postfix(reward=f"{row['reward/mean']:.2f}", acc=f"{log.last('eval/accuracy'):.3f}")
        done = step + 1 == cfg.run.steps
        if plain_every and ((step + 1) % plain_every == 0 or done):  # instead of a bar: one line
            print(f"step {step + 1}/{cfg.run.steps}  reward {row['reward/mean']:.3f}  "
                  f"held-out acc {log.last('eval/accuracy'):.3f}", flush=True)
        saving = cfg.run.save_every and (step + 1) % cfg.run.save_every == 0
        if bad_steps >= cfg.run.max_bad_steps or saving or done or stop.requested:
            _save(out, step + 1, model, tok, opt, beta, log, cfg, critic)
            log.write_csv()
        if bad_steps >= cfg.run.max_bad_steps:
            raise RuntimeError(f"{bad_steps} consecutive non-finite losses or gradients at step {step + 1}; "
                               f"stopped with a checkpoint of the last good state in {out / 'checkpoints'}")
        if stop.requested and not done:
            _interrupted(out, step + 1, cfg, bar, reference)
    bar.close()
    if reference is not None:
        reference.close()

    # 7. final evaluation and outputs
    final = evaluate(sampler, eval_set, eval_prompts, cfg, step=cfg.run.steps)
    log.rows[-1].update(final) if log.rows[-1]["step"] == cfg.run.steps else log.log({"step": cfg.run.steps, **final})
    log = distributed.metrics_log(out, log.rows)  # rewrite metrics.jsonl with the final row merged
    log.write_csv()
    log.plot()
    checkpoint.save_final(out / "final", model, tok, opt.weights.state_dict(model))  # fp32 masters; LoRA: merged
    summary = {"heldout_accuracy_before": before, "heldout_accuracy_after": final.get("eval/accuracy"),
               "heldout_problems": len(eval_set), "steps": cfg.run.steps, "seconds": time.perf_counter() - t_start,
               "sandbox_isolation": isolation, "final_model": str(out / "final"), "precision": prec.name,
               **{k: v for k, v in final.items()}}
    if not dd.is_main:
        return summary
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"held-out accuracy (greedy, {len(eval_set)} problems): before {before:.3f} -> after "
          f"{summary['heldout_accuracy_after']:.3f}   [{summary['seconds']:.0f} s, run dir {out}]"
          + (f"   code sandbox isolation: {isolation}" if isolation else ""))
    return summary


def evaluate(sampler, problems, prompts, cfg: Config, step: int) -> dict[str, float]:
    """Held-out greedy accuracy (and sampled accuracy when run.eval_samples > 0), plus suites."""
    from benchmarks import evaluate as bench_eval

    res = bench_eval(sampler, problems, prompts, n=1, temperature=0.0, max_new_tokens=cfg.sampling.max_new_tokens)
    row = {"eval/accuracy": res.metrics["accuracy"]}
    if cfg.run.eval_samples:
        res = bench_eval(sampler, problems, prompts, n=cfg.run.eval_samples, temperature=cfg.sampling.temperature,
                         top_p=cfg.sampling.top_p, max_new_tokens=cfg.sampling.max_new_tokens, seed=cfg.run.seed + step)
        row["eval/sampled_accuracy"] = res.metrics[f"avg@{cfg.run.eval_samples}"]
    if cfg.run.eval_suites:
        from benchmarks import suite_metrics

        row.update(suite_metrics(sampler, cfg, step))
    return row


def _old_logp(model, roll, cfg: Config, device):
    """("old" log-probs [N, T] or None, TIS weights [N, T] or None) before the update.

    None when one epoch of one minibatch makes them equal to the current ones detached and
    the sampler is this very model; an engine (vllm) computes its own, slightly different,
    log-probs, so the trainer's are recomputed and optionally corrected (TIS, Yao et al. 2025).
    """
    exact = cfg.sampling.backend == "transformers"
    if exact and cfg.algo.ppo_epochs * cfg.algo.minibatches == 1:
        return None, None
    old = logp_of(model, rollout_inputs(roll), cfg, device)
    if exact or cfg.sampling.vllm_tis_cap <= 0:
        return old, None
    from reasoner.sampler.vllm import tis_weights

    return old, tis_weights(old, roll.logp, roll.completion_mask, cfg.sampling.vllm_tis_cap)


def _adapt_beta(beta: float, kl: float, cfg: Config) -> float:
    if cfg.algo.kl_target <= 0 or beta == 0:
        return beta
    from reasoner.losses import adaptive_kl_update

    return adaptive_kl_update(beta, kl, cfg.algo.kl_target, cfg.algo.kl_horizon, n_steps=1)


def _step_row(step, roll, verdicts, scores, upd, t, opt, beta) -> dict:
    lengths = roll.lengths.float()
    n_tok = float(lengths.sum())
    row = {"step": step, "reward/mean": float(scores.mean()), "reward/std": float(scores.std()) if scores.numel() > 1 else 0.0,
           "accuracy": sum(v.status == "correct" for v in verdicts) / len(verdicts),
           "frac_zero_std_groups": frac_zero_std_groups(scores),
           "length/mean": float(lengths.mean()), "length/max": float(lengths.max()),
           "length/truncated_frac": float(roll.truncated.float().mean()),
           "policy/entropy": upd.pop("loss/entropy", float("nan")), "kl/beta": beta,
           "lr": opt.lr, **upd,
           **{f"time/{k}": v for k, v in t.items()}, "tokens_per_s": n_tok / max(sum(t.values()), 1e-9)}
    for s in verifiers.STATUSES:
        row[f"verify/{s}_frac"] = sum(v.status == s for v in verdicts) / len(verdicts)
    return row


def _save(out, step, model, tok, opt, beta, log, cfg, critic=None) -> None:
    state = {"optim": opt.state_dict(), "beta": beta, "metrics": log.rows,
             **({"critic": critic.checkpoint_state()} if critic is not None else {})}
    checkpoint.save(out, step, model, tok, state, cfg.run.keep_checkpoints)


class Interrupted(KeyboardInterrupt):
    """SIGINT honoured at a step boundary: a checkpoint was saved; the message says how to resume."""


def _interrupted(out: Path, step: int, cfg: Config, bar, reference) -> None:
    bar.close()
    if reference is not None:
        reference.close()
    raise Interrupted(f"interrupted at step {step} of {cfg.run.steps}; checkpoint saved in "
                      f"{out / 'checkpoints' / f'step-{step:07d}'}; resume with: reasoner train --resume auto "
                      f"run.out_dir={out}")


class _StopAtStep:
    """SIGINT during the loop asks for a stop after the current step (with a checkpoint); a second
    one, or one before the loop, aborts at once. Forked children (reference, workers) inherit the
    handler and ignore SIGINT: this process decides. Off under torchrun (ranks must stop together)."""

    def __init__(self, active: bool):
        self.requested, self.armed, self.pid, self.prev = False, False, os.getpid(), None
        if active and threading.current_thread() is threading.main_thread() \
                and signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:  # ignored (a background job): leave it
            self.prev = signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum, frame) -> None:
        if os.getpid() != self.pid:
            return
        if not self.armed or self.requested:
            self.close()
            raise KeyboardInterrupt
        self.requested = True
        print("\nreasoner: stopping after this step with a checkpoint (Ctrl-C again to stop at once)",
              file=sys.stderr, flush=True)

    def steps(self, it):
        """Iterate ``it`` with the stop armed; the previous SIGINT handler is back when it ends."""
        self.armed = True
        try:
            yield from it
        finally:
            self.close()

    def close(self) -> None:
        self.armed = False
        if self.prev is not None and os.getpid() == self.pid:
            signal.signal(signal.SIGINT, self.prev)
            self.prev = None


def _quiet_progress_bars() -> None:
    try:
        import huggingface_hub.utils
        import transformers.utils.logging

        transformers.utils.logging.disable_progress_bar()
        huggingface_hub.utils.disable_progress_bars()
    except (ImportError, AttributeError):
        pass


def _report_errors(verdicts, step: int) -> bool:
    """Print the first ``error`` verdict's text (a verifier that raised) once; True when printed."""
    errors = [v for v in verdicts if v.status == "error"]
    if not errors:
        return False
    tqdm.write(f"reasoner: warning: step {step}: {len(errors)} of {len(verdicts)} completions got verdict "
               f"'error' (verify/error_frac in metrics.jsonl, details in samples.jsonl); first: {errors[0].detail}",
               file=sys.stderr)
    return True


def _check_problems(train_set, eval_set, cfg: Config) -> None:
    """One-line errors before any model loads: an empty training set, a row naming an unknown verifier
    (train, held-out and run.eval_suites)."""
    if not train_set:
        skipped = " (every row was skipped as malformed)" if getattr(train_set, "skipped", 0) else ""
        raise data.DataError(f"data.train={cfg.data.train!r} (split {cfg.data.train_split!r}): the training set "
                             f"is empty{skipped}")
    sets = {f"data.train={cfg.data.train!r}": train_set, f"data.eval={cfg.data.eval!r}": eval_set}
    for spec in [s.strip() for s in cfg.run.eval_suites.split(",") if s.strip()]:
        from benchmarks.run import load_suite, resolve_suite

        sets[f"run.eval_suites: {spec}"] = load_suite(resolve_suite(spec), cfg.data)
    for key, problems in sets.items():
        try:
            verifiers.check_names(problems)
        except ValueError as e:
            raise data.DataError(f"{key}: {e.args[0]} (for a run: run.plugins=mypkg.verifiers or ./my_verifiers.py)"
                                 ) from None


def _check_sandbox(problems, cfg: Config) -> str | None:
    if not any(p.verifier == "code" for p in problems):
        return None
    from verifiers.code import require_isolation

    return require_isolation(cfg.run.allow_weak_sandbox)
