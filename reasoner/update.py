"""The policy update: PPO epochs x minibatches x gradient accumulation over one rollout."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from reasoner import distributed
from reasoner.engine import FAST, Engine
from reasoner.losses import LossParams, policy_loss
from reasoner.optim import Optimizer
from reasoner.rewards import overlong_loss_mask
from reasoner.types import Rollout


def _no_reference() -> None:
    return None


@dataclass(frozen=True)
class UpdateParams:
    """What the update reads: the loss's parameters and how to walk the batch."""

    loss: LossParams
    epochs: int = 1  # algo.ppo_epochs
    minibatches: int = 1  # algo.minibatches
    grad_accum: int = 1  # optim.grad_accum: micro-batches per minibatch
    temperature: float = 1.0  # sampling.temperature: log-probs of the tempered distribution (before top_k/min_p/top_p)
    mask_truncated: bool = False  # algo.overlong=mask: truncated completions leave the loss

    @classmethod
    def of(cls, cfg) -> "UpdateParams":
        """From a whole config (the build step's business)."""
        return cls(LossParams.of(cfg.algo, cfg.sampling.max_new_tokens), cfg.algo.ppo_epochs, cfg.algo.minibatches,
                   cfg.optim.grad_accum, cfg.sampling.temperature, cfg.algo.overlong == "mask")


@dataclass
class UpdateBatch:
    """Everything the loss needs for N completions."""

    rollout: Rollout
    adv: torch.Tensor  # [N] float, one advantage per completion, or [N, T] per token (gae)
    old_logp: torch.Tensor | None = None  # [N, T] detached; None = equal to the current (1 epoch, 1 minibatch)
    ref_logp: Callable[[], torch.Tensor | None] = _no_reference  # gives [N, T] detached, or None (no KL in
    # the loss); called after the policy's first forward, which a reference process overlaps (reasoner.reference)
    beta: float = 0.0  # the KL coefficient in the loss
    weights: torch.Tensor | None = None  # [N, T] per-token policy-loss weights (mismatch correction) or None


def _pick(x: torch.Tensor | None, idx: torch.Tensor, T: int) -> torch.Tensor | None:
    return None if x is None else x[idx][:, :T]


def _rows(batch: UpdateBatch, idx: torch.Tensor):
    r = batch.rollout
    T = int(r.completion_mask[idx].sum(-1).max().clamp_min(1))  # trim right padding of this slice
    return (r.prompt_ids[idx], r.prompt_mask[idx], r.completion_ids[idx][:, :T], r.completion_mask[idx][:, :T],
            batch.adv[idx] if batch.adv.dim() == 1 else _pick(batch.adv, idx, T), _pick(batch.old_logp, idx, T),
            _pick(batch.weights, idx, T))


def _loss_mask(batch: UpdateBatch, idx: torch.Tensor, cmask: torch.Tensor, mask_truncated: bool) -> torch.Tensor:
    """Tokens that count in the loss: the sampled ones, minus truncated rows when algo.overlong=mask."""
    return overlong_loss_mask(cmask, batch.rollout.truncated[idx]) if mask_truncated else cmask


def _micro_weight(mask: torch.Tensor, mb_mask: torch.Tensor, loss_agg: str) -> float:
    """Share of a micro-batch in its minibatch's loss, so accumulation equals one big batch."""
    if loss_agg == "token_mean":
        return float(mask.sum() / mb_mask.sum().clamp_min(1))
    return mask.shape[0] / mb_mask.shape[0]


def ppo_update(model, optimizer: Optimizer, batch: UpdateBatch, p: UpdateParams,
               generator: torch.Generator, engine: Engine = FAST) -> dict[str, float]:
    """Run ``p.epochs`` passes over ``p.minibatches`` shuffled minibatches.

    Returns the mean of each loss statistic and the last gradient norm. A non-finite
    loss or gradient skips that optimizer step (counted in "update/skipped"); under torchrun
    all ranks skip together. ``model`` may be DDP-wrapped: micro-batches but the last skip
    the gradient all-reduce, and the loss is scaled so ranks average to the global batch.
    ``optimizer`` (reasoner.optim) owns clipping, the step and the float32 master weights.
    """
    N, agg = batch.adv.shape[0], p.loss.loss_agg
    sums: dict[str, float] = {}
    count, skipped, grad_norm = 0, 0, 0.0
    model.train()
    for _ in range(p.epochs):
        order = torch.randperm(N, generator=generator) if p.minibatches > 1 else torch.arange(N)
        for mb in order.split(N // p.minibatches):
            optimizer.zero_grad()
            mb_mask = _loss_mask(batch, mb, batch.rollout.completion_mask[mb], p.mask_truncated)
            scale = distributed.loss_scale(float(mb_mask.sum()), agg)  # 1.0 in one process
            finite = True
            micros = mb.split(math.ceil(len(mb) / p.grad_accum))
            for i, micro in enumerate(micros):
                pids, pmask, cids, cmask, adv, old, w = _rows(batch, micro)
                with distributed.no_sync(model, last=i == len(micros) - 1), engine.sized(model, int(cmask.sum())):
                    logp, ent = engine.logp(model, pids, pmask, cids, cmask, p.temperature,
                                            with_entropy=True, entropy_grad=p.loss.entropy_coef > 0)
                    logp = logp.float()
                    ref = _pick(batch.ref_logp(), micro, cmask.shape[1])
                    lmask = _loss_mask(batch, micro, cmask, p.mask_truncated)
                    out = policy_loss(logp, logp.detach() if old is None else old, adv, lmask, p.loss, ref_logp=ref,
                                      beta=batch.beta, entropy=None if ent is None else ent.float(), token_weights=w)
                    finite &= bool(torch.isfinite(out.loss))
                    (out.loss * _micro_weight(lmask, mb_mask, agg) * scale).backward()
                optimizer.collect()  # float32 masters accumulate the micro-batches' gradients
                for k, v in out.stats.items():
                    sums[k] = sums.get(k, 0.0) + v
                count += 1
            gn = optimizer.step(finite)
            if gn is None:
                skipped += 1
            else:
                grad_norm = gn
    stats = {k: v / count for k, v in sums.items()}
    stats.update({"update/grad_norm": grad_norm, "update/skipped": skipped, "update/steps": p.epochs * p.minibatches})
    return stats
