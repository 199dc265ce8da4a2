"""Train/inference mismatch correction for engine rollouts (``sampling.backend=vllm``): PURE functions.

An engine such as vLLM samples with its own kernels, so its log-prob of a sampled token
(``sampler_logp``) differs slightly from the trainer's (``trainer_logp``, the "old" log-prob of the
PPO ratio). The policy term of each token is multiplied by an importance weight
``w = pi_trainer / pi_sampler`` of that token (``level`` token) or of its whole sequence (``level``
sequence), either truncated at ``cap`` (``mode`` truncate) or zeroed when outside
``[1/cap, cap]`` (``mode`` mask). The result is always per token, ``[N, T]``, 0 off the mask:
what ``losses.policy_loss`` takes as ``token_weights``. Chosen once by the build step
(``Correction.of(cfg.sampling)``); formulas in ``docs/algorithms.md`` ("Engine/trainer mismatch").
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from reasoner.registry import Registry

LogWeight = Callable[[Tensor], Tensor]  # per-token log(trainer / sampler) [N, T], 0 off mask -> log w [N, T]
Bound = Callable[[Tensor, float], Tensor]  # (log w [N, T], cap) -> w [N, T]
IS_LEVELS: Registry[LogWeight] = Registry("importance sampling level")
IS_MODES: Registry[Bound] = Registry("importance sampling mode")


@IS_LEVELS.register("token")
def token_log_weight(log_diff: Tensor) -> Tensor:
    """``log w_t = trainer_logp_t - sampler_logp_t``: one weight per token.

    Yao et al. 2025, "Your Efficient RL Framework Secretly Brings You Off-Policy RL Training"
    (truncated importance sampling, TIS); TRL ``vllm_importance_sampling_mode="token_*"``.
    """
    return log_diff


@IS_LEVELS.register("sequence")
def sequence_log_weight(log_diff: Tensor) -> Tensor:
    """``log w_i = sum_t (trainer_logp_t - sampler_logp_t)``: the sequence's likelihood ratio,
    the same for every token of row i.

    Liu, Li et al. 2025, "When Speed Kills Stability: Demystifying RL Collapse from the
    Training-Inference Mismatch" (sequence-level IS: Seq-TIS, Seq-MIS); TRL
    ``vllm_importance_sampling_mode="sequence_*"`` (a sum, not GSPO's mean).
    """
    return log_diff.sum(-1, keepdim=True).expand_as(log_diff)


@IS_MODES.register("truncate")
def truncate(log_w: Tensor, cap: float) -> Tensor:
    """``min(w, cap)`` (Yao et al. 2025, TIS; TRL ``*_truncate`` with ``clip_max=cap``)."""
    return log_w.clamp(max=math.log(cap)).exp()


@IS_MODES.register("mask")
def mask_outside(log_w: Tensor, cap: float) -> Tensor:
    """``w`` where ``1/cap <= w <= cap``, else 0: such tokens (or sequences) leave the loss.

    Masked importance sampling (Ling Team 2025, IcePop, token level; Liu, Li et al. 2025,
    Seq-MIS); TRL ``*_mask`` with ``clip_min=1/cap, clip_max=cap``. Compared in log space, so a
    long sequence's weight cannot overflow.
    """
    bound = math.log(cap)
    keep = log_w.abs() <= bound
    return torch.where(keep, log_w.clamp(-bound, bound).exp(), torch.zeros_like(log_w))


def is_weights(trainer_logp: Tensor, sampler_logp: Tensor, mask: Tensor, cap: float,
               level: LogWeight = token_log_weight, bound: Bound = truncate) -> Tensor:
    """Detached float32 importance weights [N, T] of the sampled tokens, 0 off ``mask``.

    ``trainer_logp``, ``sampler_logp``: [N, T] log-probs of the sampled tokens under the trainer
    before the update and under the engine that sampled them; ``cap > 0``. ``level``: a function
    of ``IS_LEVELS``, ``bound``: one of ``IS_MODES``.
    """
    if cap <= 0:
        raise ValueError(f"importance sampling cap must be > 0, got {cap}")
    if trainer_logp.shape != sampler_logp.shape or trainer_logp.shape != mask.shape:
        raise ValueError(f"shapes differ: trainer {tuple(trainer_logp.shape)}, sampler "
                         f"{tuple(sampler_logp.shape)}, mask {tuple(mask.shape)}")
    m = mask.bool()
    diff = (trainer_logp.detach().float() - sampler_logp.detach().float()).masked_fill(~m, 0.0)
    return bound(level(diff), cap) * m.float()


@dataclass(frozen=True)
class Correction:
    """The run's correction, built once: ``correction(trainer_logp, sampler_logp, mask) -> [N, T]``."""

    level: LogWeight  # a function of IS_LEVELS
    bound: Bound  # a function of IS_MODES
    cap: float

    def __post_init__(self):
        if self.cap <= 1:
            raise ValueError(f"the importance sampling cap must be > 1 (weights are bounded by [1/cap, cap] or "
                             f"truncated at cap), got {self.cap}")

    @classmethod
    def of(cls, sampling) -> "Correction | None":
        """From a config's ``sampling`` section; None when ``vllm_tis_cap`` is 0 (off)."""
        if sampling.vllm_tis_cap == 0:
            return None
        return cls(IS_LEVELS.get(sampling.vllm_is_level), IS_MODES.get(sampling.vllm_is_mode), sampling.vllm_tis_cap)

    def __call__(self, trainer_logp: Tensor, sampler_logp: Tensor, mask: Tensor) -> Tensor:
        return is_weights(trainer_logp, sampler_logp, mask, self.cap, self.level, self.bound)
