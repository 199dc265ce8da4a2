"""The policy's optimizer: AdamW over the master weights (``reasoner.precision``) and its LR schedule.

``step(grad_clip)`` is the one place an update is applied: clip the masters' gradients, step
(unless a gradient is non-finite, on every rank alike), write the masters back into the module.
"""
from __future__ import annotations

import functools
import math
from typing import Callable

import torch

from reasoner import distributed, threads
from reasoner.config import ConfigError, OptimConfig
from reasoner.precision import MasterWeights
from reasoner.registry import Registry

OWN_SCHEDULES = ("constant", "cosine", "linear")  # reasoner's lr_factor: the values of earlier versions
METRIC_SCHEDULES = ("reduce_lr_on_plateau", "greedy")  # step on a metric, not per step: not offered


def lr_factor(step: int, warmup: int, total: int, schedule: str) -> float:
    """Multiplier of optim.lr at scheduler step ``step``: linear warm-up over ``warmup`` steps, then
    constant, cosine or linear decay to 0 at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    frac = (step - warmup) / max(total - warmup, 1)
    if schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * min(frac, 1.0)))
    if schedule == "linear":
        return max(1.0 - frac, 0.0)
    return 1.0


def _own(optimizer, warmup: int, total: int, name: str, **kwargs) -> torch.optim.lr_scheduler.LRScheduler:
    if kwargs:
        raise TypeError(f"schedule {name} takes no arguments, got {', '.join(kwargs)}")
    return torch.optim.lr_scheduler.LambdaLR(optimizer, functools.partial(lr_factor, warmup=warmup, total=total,
                                                                          schedule=name))


def _library(optimizer, warmup: int, total: int, name: str, **kwargs) -> torch.optim.lr_scheduler.LRScheduler:
    from transformers import get_scheduler

    return get_scheduler(name, optimizer, num_warmup_steps=warmup, num_training_steps=total,
                         scheduler_specific_kwargs=kwargs)


def _schedules() -> Registry:
    """optim.schedule names: reasoner's three, then every per-step ``transformers.get_scheduler`` name."""
    from transformers import SchedulerType

    reg: Registry = Registry("learning-rate schedule")
    for name in OWN_SCHEDULES:
        reg.register(name)(_own)
    for name in (s.value for s in SchedulerType):
        if name not in OWN_SCHEDULES and name not in METRIC_SCHEDULES:
            reg.register(name)(_library)
    return reg


SCHEDULES = _schedules()


def make_schedule(optimizer, cfg: OptimConfig, total_steps: int) -> torch.optim.lr_scheduler.LRScheduler:
    """The LR schedule ``cfg.schedule`` over ``total_steps`` scheduler steps (warm-up ``cfg.warmup_steps``,
    extra arguments ``cfg.schedule_kwargs``)."""
    return SCHEDULES.get(cfg.schedule)(optimizer, cfg.warmup_steps, max(total_steps, 1), cfg.schedule,
                                       **cfg.schedule_kwargs)


def check_schedule(cfg: OptimConfig, total_steps: int) -> None:
    """Build the schedule on a dummy optimizer, so bad optim.schedule_kwargs fail before any model loads."""
    dummy = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=cfg.lr or 1.0)
    try:
        make_schedule(dummy, cfg, total_steps)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"optim.schedule={cfg.schedule} with optim.schedule_kwargs={cfg.schedule_kwargs}: {e} "
                          "(see transformers.get_scheduler for the arguments each schedule takes)") from None


class Optimizer:
    """AdamW + schedule over ``MasterWeights(model, master)``; ``state_dict`` / ``load_state_dict`` for checkpoints."""

    def __init__(self, model: torch.nn.Module, cfg: OptimConfig, total_steps: int, master: bool = False,
                 make: Callable[[list], torch.optim.Optimizer] | None = None, start: dict | None = None):
        """make(params): another torch optimizer over the masters (tests use SGD); default AdamW from ``cfg``.
        start: the masters' starting float32 values by name (``precision.loaded_float32``)."""
        self.model, self.grad_clip = model, cfg.grad_clip
        self.weights = MasterWeights(model, master, start)
        params = self.weights.params
        fused = bool(params) and all(p.device.type in ("cpu", "cuda") and p.dtype == torch.float32 for p in params)
        self.opt = make(params) if make is not None else torch.optim.AdamW(
            params, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay, fused=fused)
        self.sched = make_schedule(self.opt, cfg, total_steps)

    @property
    def lr(self) -> float:
        return self.opt.param_groups[0]["lr"]

    def zero_grad(self) -> None:
        self.weights.zero_grad()

    def collect(self) -> None:
        """After a backward: the module's gradients onto the masters (a no-op without copies)."""
        self.weights.collect()

    def step(self, finite: bool = True) -> float | None:
        """Clip, step and publish; returns the gradient norm, or None when the step was skipped
        (a non-finite loss or gradient on any rank)."""
        self.collect()
        with threads.for_params(self.model):
            gn = torch.nn.utils.clip_grad_norm_(self.weights.params, self.grad_clip or float("inf"))
            gn = gn.full_tensor() if hasattr(gn, "full_tensor") else gn  # FSDP2 returns a DTensor
            ok = distributed.all_true(finite and bool(torch.isfinite(gn)))
            if ok:
                self.opt.step()
                self.weights.publish()
        self.zero_grad()
        return float(gn) if ok else None

    def schedule_step(self) -> None:
        self.sched.step()

    def state_dict(self) -> dict:
        """AdamW and scheduler state plus the float32 masters (the module's weights are their rounding).
        Under FSDP2 the AdamW state is gathered from every rank's shards (collective: every rank calls)."""
        sharded = distributed.is_sharded(self.model)
        opt = distributed.fsdp_full_optim_state(self.model, self.opt) if sharded else self.opt.state_dict()
        return {"optimizer": opt, "scheduler": self.sched.state_dict(), "masters": self.weights.masters(),
                "sharded": sharded}

    def load_state_dict(self, state: dict) -> None:
        if distributed.is_sharded(self.model) != state.get("sharded", False):
            raise ValueError("the checkpoint's optimizer state was saved with run.parallel="
                             f"{'fsdp' if state.get('sharded') else 'ddp (or one process)'}; resume it the same way")
        if state.get("sharded"):
            distributed.fsdp_load_full(self.model, optimizer=self.opt, optim_state=state["optimizer"])
        else:
            self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        self.weights.load_masters(state.get("masters", []))
