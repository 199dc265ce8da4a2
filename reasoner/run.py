"""A built run (``reasoner.build.build``): its parts, and the bookkeeping around the training loop
(resume, evaluation, the step's metric row, samples, checkpoints, Ctrl-C, the final outputs)."""
from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from tqdm import tqdm

from reasoner import verifiers
from reasoner import checkpoint, distributed, seeds, writes
from reasoner.advantages import frac_zero_std_groups
from reasoner.best import Best
from reasoner.breakdown import NO_BREAKDOWN, Breakdown
from reasoner.config import RunConfig
from reasoner.metrics import log_samples, truncate_samples
from reasoner.optim import Optimizer
from reasoner.sampler import SamplingParams
from reasoner.update import UpdateParams


@dataclass
class Run:
    """Everything a training run uses, built once from the config; ``train`` only calls it."""

    r: RunConfig  # run.*: steps, seeds, schedule of evaluations, checkpoints and samples
    out: Path  # run.out_dir
    dd: distributed.DistInfo
    device: torch.device
    model: torch.nn.Module  # the policy as loaded (checkpoints, weight sync)
    policy: torch.nn.Module  # the same model, DDP/FSDP-wrapped under torchrun
    tok: Any
    prec: Any  # precision.Precision
    sampler: Any  # reasoner.sampler.Sampler
    params: SamplingParams  # G completions per problem; the seed is set per step (``sampling``)
    collect: Any  # dynamic.Collector: steps (a)-(c)
    reference: Any  # reference.NoReference / InlineReference / ReferenceProcess
    old_logp: Callable  # reference.OldLogp: rollout -> (old log-probs or None, mismatch weights or None)
    kl: Any  # kl.NoKL / KLInLoss / KLInReward
    advantage: Any  # advantages.GroupAdvantage / critic.CriticAdvantage
    update: UpdateParams
    engine: Any  # engine.Engine: log-probs for the update (reasoner.engine)
    opt: Optimizer
    evaluate: Callable[[int], dict[str, float]]  # held-out (and suite) metrics at a step
    log: Any  # metrics.MetricsLog (or its no-op twin on other ranks)
    isolation: str | None  # the code sandbox's isolation level, when code problems are in the run
    n_eval: int
    stop: "StopAtStep"
    best: Best = field(default_factory=Best)  # run.best_metric's best evaluation, early stopping (run.patience)
    breakdown: Breakdown = field(default_factory=Breakdown)  # per-source / per-verifier columns (none by default)
    t_start: float = field(default_factory=time.perf_counter)
    start: int = 0
    end: int = 0  # the last step recorded (run.steps, or earlier when stopped early)
    stopped_early: bool = False
    bad_steps: int = 0
    _eval_at: tuple[int, dict] | None = None  # the latest evaluation: (step, metrics)
    _bar: Any = None
    _shown_error: bool = False
    _warned_truncation: bool = False

    def sampling(self, step: int) -> SamplingParams:
        """The sampling parameters of a (0-based) step: the run's, with the step's seed on this rank."""
        return SamplingParams(**{**self.params.__dict__, "seed": seeds.sampling(self.r.seed, step, self.dd.rank)})

    def begin(self) -> int:
        """4-5: load the checkpoint ``run.resume`` names, if any, else evaluate the held-out set
        before training; return the step to start from."""
        ckpt = checkpoint.find_resume(self.out, self.r.resume)
        if ckpt is not None:
            state = checkpoint.load_state(ckpt)
            checkpoint.load_weights(self.model, ckpt, self.prec.compute, self.device)
            self.opt.load_state_dict(state["optim"])  # also the float32 masters under bf16-mixed
            self.kl.beta, self.start = state["beta"], state["step"]
            self.advantage.load_state_dict(state)  # the critic's weights and optimizer, if any
            self.best.load_state_dict(state.get("best"))
            self.log = distributed.metrics_log(self.out, state["metrics"], self.log.sinks)
            self.sampler.sync_weights(self.model)
            print(f"[rank {self.dd.rank}] resumed from {ckpt} at step {self.start}")
        elif self.r.resume == "auto" and self.dd.is_main:
            print(f"--resume auto: no checkpoint in {self.out / 'checkpoints'}; starting a fresh run")
        if self.dd.is_main:
            truncate_samples(self.out / "samples.jsonl", self.start)  # rows past the resumed step are written again
        self.log.sinks.open(self.start)  # trackers: a resumed run continues its tracker run
        self.end = self.start
        if self.start == 0:
            self.log.log({"step": 0, **self._evaluated(0, self.evaluate(0))})
        return self.start

    def _evaluated(self, step: int, metrics: dict[str, float]) -> dict[str, float]:
        """After an evaluation: remember it; a new best of run.best_metric saves ``best/``."""
        self._eval_at = (step, metrics)
        if self.best.observe(step, metrics):
            checkpoint.save_best(self.out, self.model, self.tok, self.opt.weights.state_dict(self.model),
                                 {"metric": self.best.metric, "value": self.best.value, "step": step})
        return metrics

    def steps(self):
        """The loop's step numbers, with a progress bar; Ctrl-C stops after the current step."""
        show = self.r.progress and self.dd.is_main
        self._bar = tqdm(range(self.start, self.r.steps), initial=self.start, total=self.r.steps,
                         disable=not (show and sys.stderr.isatty()), dynamic_ncols=True)
        it = self.stop.steps(self._bar)
        for step in it:
            yield step
            if self.stopped_early:  # run.patience evaluations without a new best
                it.close()
                break
        self._bar.close()
        self.reference.close()

    def record(self, step: int, batch, shaped: dict, upd: dict, seconds: dict[str, float]) -> None:
        """(g): the metric row of ``step`` (1-based); samples, evaluation, checkpoint and stop as scheduled."""
        r, G = self.r, self.params.n
        if self.dd.is_main and not self._shown_error:
            self._shown_error = report_errors(batch.verdicts, step)
        row = distributed.reduce_metrics({**step_row(step, batch, upd, seconds, G, self.breakdown),
                                          "kl/beta": self.kl.beta, "kl/mean": self.kl.measured(upd), "lr": self.opt.lr,
                                          **shaped})
        if self.dd.is_main and not self._warned_truncation:
            self._warned_truncation = warn_truncation(step, row["length/truncated_frac"], self.params.max_new_tokens)
        self.bad_steps = self.bad_steps + 1 if upd["update/skipped"] else 0
        if self.dd.is_main and r.log_samples_every and (step - 1) % r.log_samples_every == 0:
            self.log.sinks.samples(step, log_samples(
                self.out / "samples.jsonl", step, batch.prompts, batch.roll.texts, batch.scores.tolist(),
                [v.status for v in batch.verdicts], G, details=[v.detail for v in batch.verdicts]))
        done = step == r.steps
        if (r.eval_every and step % r.eval_every == 0) or done:  # the last one is the final evaluation
            row.update(self._evaluated(step, self.evaluate(step)))
            self.stopped_early = self.best.exhausted and not done
        self.log.log(row)
        self.end = step
        self._progress(step, row, done or self.stopped_early)
        failing, interrupted = self.bad_steps >= r.max_bad_steps, self._interrupted()
        if failing or (r.save_every and step % r.save_every == 0) or done or interrupted or self.stopped_early:
            self.save(step)
        if self.stopped_early and self.dd.is_main:
            print(f"reasoner: stopping early at step {step}: {r.best_metric} has not improved for {r.patience} "
                  f"evaluations (best {self.best.value} at step {self.best.step})", file=sys.stderr, flush=True)
        if failing or (interrupted and not done):
            self.log.sinks.close()
        if failing:
            raise RuntimeError(f"{self.bad_steps} consecutive non-finite losses or gradients at step {step}; "
                               f"stopped with a checkpoint of the last good state in {self.out / 'checkpoints'}")
        if interrupted and not done:
            self._bar.close()
            self.reference.close()
            raise Interrupted(self._interrupted_message(step))

    def _interrupted(self) -> bool:
        """SIGINT on any rank stops every rank after this step. Under torchrun the launcher forwards it to
        each rank and one may see it a step later than another: the ranks agree here, at every step
        boundary (one tiny all-reduce), then all save (collective) and stop together."""
        return distributed.any_true(self.stop.requested)

    def _interrupted_message(self, step: int) -> str:
        """What Ctrl-C prints (``reasoner.cli``, exit 130): where the checkpoint is and how to resume; under
        torchrun rank 0 says it, the others only that they stopped."""
        if not self.dd.is_main:
            return f"[rank {self.dd.rank}] interrupted at step {step} of {self.r.steps} with every rank"
        return (f"interrupted at step {step} of {self.r.steps}; checkpoint saved in "
                f"{self.out / 'checkpoints' / f'step-{step:07d}'}; resume with: "
                + ("torchrun (the same options) -m " if self.dd.world > 1 else "")
                + f"reasoner train --resume auto run.out_dir={self.out}")

    def _progress(self, step: int, row: dict, done: bool) -> None:
        acc = self.log.last("eval/accuracy")
        self._bar.set_postfix(reward=f"{row['reward/mean']:.2f}", acc=f"{acc:.3f}")
        every = max(1, self.r.steps // 20)
        if self.r.progress and self.dd.is_main and not sys.stderr.isatty() and (step % every == 0 or done):
            print(f"step {step}/{self.r.steps}  reward {row['reward/mean']:.3f}  held-out acc {acc:.3f}", flush=True)

    def save(self, step: int) -> None:
        state = {"optim": self.opt.state_dict(), "beta": self.kl.beta, "metrics": self.log.rows,
                 "best": self.best.state_dict(), **self.advantage.state_dict()}
        checkpoint.save(self.out, step, self.model, self.tok, state, self.r.keep_checkpoints)
        self.log.write_csv()

    def finish(self) -> dict:
        """7: the final evaluation (done by ``record`` at the last step, or here for a run resumed at its
        end), save the final model, write summary.json, the CSV and the plot; close the trackers."""
        end, log = self.end, self.log
        final = self._final_eval(end)
        log = distributed.metrics_log(self.out, log.rows)  # rewrite metrics.jsonl with the final row merged
        log.write_csv()
        log.plot()
        checkpoint.save_final(self.out / "final", self.model, self.tok, self.opt.weights.state_dict(self.model))
        self.log.sinks.close()
        before = log.rows[0].get("eval/accuracy", float("nan"))
        summary = {"heldout_accuracy_before": before, "heldout_accuracy_after": final.get("eval/accuracy"),
                   "heldout_problems": self.n_eval, "steps": end,
                   "seconds": time.perf_counter() - self.t_start, "sandbox_isolation": self.isolation,
                   "final_model": str(self.out / "final"), "precision": self.prec.name,
                   "stopped_early": self.stopped_early, **self.best.summary(), **final}
        if self.dd.is_main:
            writes.replace_text(self.out / "summary.json", json.dumps(summary, indent=2),
                                intact="the final model and the checkpoints are intact")
            print(f"held-out accuracy (greedy, {self.n_eval} problems): before {before:.3f} -> after "
                  f"{summary['heldout_accuracy_after']:.3f}   [{summary['seconds']:.0f} s, run dir {self.out}]"
                  + (f"   code sandbox isolation: {self.isolation}" if self.isolation else ""))
        return summary

    def _final_eval(self, end: int) -> dict[str, float]:
        """The evaluation at the last step, merged into its row (and sent to the trackers)."""
        if self._eval_at is not None and self._eval_at[0] == end:
            return self._eval_at[1]  # evaluated in ``record`` (the last step, or an early stop)
        final, log = self._evaluated(end, self.evaluate(end)), self.log
        if log.rows[-1]["step"] == end:
            log.rows[-1].update(final)
            log.sinks.log({"step": end, **final})
        else:
            log.log({"step": end, **final})
        return final


def step_row(step: int, batch, upd: dict, seconds: dict[str, float], G: int,
             breakdown: Breakdown = NO_BREAKDOWN) -> dict:
    """The step's metrics from its scored batch [N], the update's statistics and the time split; with
    several training sources or verifiers, their own columns (``reasoner.breakdown``)."""
    roll, verdicts, scores = batch.roll, batch.verdicts, batch.scores.view(-1, G)
    lengths = roll.lengths.float()
    row = {"step": step, "reward/mean": float(scores.mean()),
           "reward/std": float(scores.std()) if scores.numel() > 1 else 0.0,
           "accuracy": sum(v.status == "correct" for v in verdicts) / len(verdicts),
           "frac_zero_std_groups": frac_zero_std_groups(scores),
           "length/mean": float(lengths.mean()), "length/max": float(lengths.max()),
           "length/truncated_frac": float(roll.truncated.float().mean()),
           "policy/entropy": upd.pop("loss/entropy", float("nan")), **upd,
           **{f"time/{k}": v for k, v in seconds.items()},
           "tokens_per_s": float(lengths.sum()) / max(sum(seconds.values()), 1e-9)}
    for s in verifiers.STATUSES:
        row[f"verify/{s}_frac"] = sum(v.status == s for v in verdicts) / len(verdicts)
    row.update(breakdown.row(batch.problems, verdicts, scores, lengths))
    return row


def report_errors(verdicts, step: int) -> bool:
    """Print the first ``error`` verdict's text (a verifier that raised); True when printed."""
    errors = [v for v in verdicts if v.status == "error"]
    if not errors:
        return False
    tqdm.write(f"reasoner: warning: step {step}: {len(errors)} of {len(verdicts)} completions got verdict "
               f"'error' (verify/error_frac in metrics.jsonl, details in samples.jsonl); first: {errors[0].detail}",
               file=sys.stderr)
    return True


TRUNCATION_WARN_FRAC = 0.5  # more than this share of a step's completions cut at max_new_tokens: warn (once)


def truncation_warning(step: int, truncated_frac: float, max_new_tokens: int) -> str | None:
    """The one-line warning when more than half of a step's completions hit ``max_new_tokens``; else None."""
    if not truncated_frac > TRUNCATION_WARN_FRAC:
        return None
    return (f"reasoner: warning: step {step}: {truncated_frac:.0%} of the completions hit "
            f"sampling.max_new_tokens={max_new_tokens} (length/truncated_frac in metrics.jsonl); raise it if answers "
            f"are being cut off")


def warn_truncation(step: int, truncated_frac: float, max_new_tokens: int) -> bool:
    """Print ``truncation_warning`` if there is one; True when printed (the run warns once)."""
    msg = truncation_warning(step, truncated_frac, max_new_tokens)
    if msg is not None:
        tqdm.write(msg, file=sys.stderr)
    return msg is not None


class Interrupted(KeyboardInterrupt):
    """SIGINT honoured at a step boundary: a checkpoint was saved; the message says how to resume."""


class StopAtStep:
    """SIGINT during the loop asks for a stop after the current step (with a checkpoint); a second
    one, or one before the loop, aborts at once. Forked children (reference, workers) inherit the
    handler and ignore SIGINT: this process decides. Under torchrun (``world`` > 1) the launcher
    forwards its SIGINT to every rank (the ranks run in their own sessions, so a terminal's Ctrl-C
    reaches the launcher only); ``Run._interrupted`` makes them agree on the step, and torchrun waits
    ``--shutdown-timeout`` seconds (30 by default) for the step and the save before it kills them."""

    def __init__(self, rank: int = 0, world: int = 1):
        self.requested, self.armed, self.pid, self.prev = False, False, os.getpid(), None
        self.who = f"[rank {rank}] " if world > 1 else ""
        self.again = ("torchrun allows --shutdown-timeout seconds for it, 30 by default" if world > 1 else
                      "Ctrl-C again to stop at once")
        if threading.current_thread() is threading.main_thread() \
                and signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:  # ignored (a background job): leave it
            self.prev = signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum, frame) -> None:
        if os.getpid() != self.pid:
            return
        if not self.armed or self.requested:
            self.close()
            raise KeyboardInterrupt
        self.requested = True
        print(f"\nreasoner: {self.who}stopping after this step with a checkpoint ({self.again})", file=sys.stderr,
              flush=True)

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
