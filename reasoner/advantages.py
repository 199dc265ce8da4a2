"""Advantages: PURE estimators, and the stage that applies one to a step (``GroupAdvantage``).

A group estimator is ``fn(rewards [B, G]) -> adv [B, G]`` (rows are problems, columns the G
completions of one group; see ``reasoner.types``); all tokens of a completion share its
advantage. ``gae`` is the other kind, in ``CRITIC_ESTIMATORS``: per-token advantages from a
value model's estimates (``reasoner.critic.CriticAdvantage``). ``reasoner.build`` picks the stage
from the registry the name is in. Formulas: ``docs/algorithms.md`` ("Advantages").
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import torch
from torch import Tensor

from reasoner.kl import RewardKL
from reasoner.losses import KL_ESTIMATORS
from reasoner.registry import Registry
from reasoner.types import Rollout

AdvantageFn = Callable[[Tensor], Tensor]
ADVANTAGES: Registry[AdvantageFn] = Registry("advantage estimator")  # group estimators
CRITIC_ESTIMATORS: Registry[Callable] = Registry("critic advantage estimator")  # need a value model


def names() -> list[str]:
    """Every valid ``algo.advantage``."""
    return ADVANTAGES.names() + CRITIC_ESTIMATORS.names()


STD_EPS = 1e-6  # added to the std before dividing (DeepSeekMath / TRL convention)


def _check_rewards(rewards: Tensor) -> Tensor:
    if not isinstance(rewards, Tensor) or rewards.dim() != 2:
        shape = tuple(rewards.shape) if isinstance(rewards, Tensor) else type(rewards).__name__
        raise ValueError(f"rewards must be a [B, G] tensor (problems x group), got {shape}")
    if rewards.numel() == 0:
        raise ValueError(f"rewards is empty: shape {tuple(rewards.shape)}")
    rewards = rewards.float()
    if not torch.isfinite(rewards).all():
        raise ValueError("rewards contain NaN or inf; verifier scores must be finite")
    return rewards


def _std(x: Tensor, dim: int | None = None) -> Tensor:
    """Sample std (Bessel corrected, like ``torch.std`` and TRL); 0 where there is one element."""
    n = x.shape[dim] if dim is not None else x.numel()
    if n < 2:
        return torch.zeros_like(x.mean(dim=dim, keepdim=dim is not None))
    return x.std(dim=dim, keepdim=dim is not None)


@ADVANTAGES.register("grpo")
def grpo(rewards: Tensor) -> Tensor:
    """(r_i - mean(r)) / (std(r) + 1e-6) within each group.

    Shao et al. 2024, "DeepSeekMath" (GRPO), section 4.1.2 outcome supervision. The std is the
    sample std (Bessel corrected), as in TRL's GRPOTrainer; a group of one has advantage 0.
    """
    r = _check_rewards(rewards)
    centred = r - r.mean(dim=1, keepdim=True)
    return centred / (_std(r, dim=1) + STD_EPS)


@ADVANTAGES.register("dr_grpo")
def dr_grpo(rewards: Tensor) -> Tensor:
    """r_i - mean(r) within each group, no std division.

    Liu et al. 2025, "Understanding R1-Zero-Like Training: A Critical Perspective" (Dr. GRPO):
    dividing by the group std up-weights too easy / too hard questions.
    """
    r = _check_rewards(rewards)
    return r - r.mean(dim=1, keepdim=True)


@ADVANTAGES.register("rloo")
def rloo(rewards: Tensor) -> Tensor:
    """r_i - mean_{j != i}(r_j) = G / (G - 1) * (r_i - mean(r)); 0 when G = 1 (no other sample).

    Ahmadian et al. 2024, "Back to Basics: Revisiting REINFORCE Style Optimization for Learning
    from Human Feedback in LLMs" (RLOO; Kool et al. 2019 for the leave-one-out baseline).
    """
    r = _check_rewards(rewards)
    g = r.shape[1]
    if g == 1:
        return torch.zeros_like(r)
    return (r - r.mean(dim=1, keepdim=True)) * (g / (g - 1))


@ADVANTAGES.register("batch_mean")
def batch_mean(rewards: Tensor) -> Tensor:
    """r_i - mean(r) over the whole batch (one baseline for all B*G completions).

    The mean baseline of docs/algorithms.md ("Advantages"): the simplest REINFORCE-with-baseline
    recipe (Williams 1992; JustRL-style write-ups). Groups are not used, so a uniform group can
    still get a non-zero advantage.
    """
    r = _check_rewards(rewards)
    return r - r.mean()


@ADVANTAGES.register("reinforce_pp")
def reinforce_pp(rewards: Tensor) -> Tensor:
    """(r_i - mean(r)) / (std(r) + 1e-6) with mean and std over the whole batch.

    Hu et al. 2025, "REINFORCE++: A Simple and Efficient Approach for Aligning Large Language
    Models": global (batch) advantage normalisation instead of per-group statistics.
    """
    r = _check_rewards(rewards)
    return (r - r.mean()) / (_std(r) + STD_EPS)


@ADVANTAGES.register("reinforce_pp_baseline")
def reinforce_pp_baseline(rewards: Tensor) -> Tensor:
    """c_i = r_i - mean(r) within each group, then c_i / (std(c) + 1e-6) with the std over the batch.

    Hu et al. 2025, "REINFORCE++" (the REINFORCE++-baseline variant for group sampling; NVIDIA's
    ProRL v2 recipe uses it): the group mean removes each prompt's difficulty, the batch std of the
    centred values sets one scale for the whole batch (sample std, Bessel corrected). A uniform
    group gets 0; the batch mean of c is 0 already, so it is not subtracted again.
    """
    r = _check_rewards(rewards)
    centred = r - r.mean(dim=1, keepdim=True)
    return centred / (_std(centred) + STD_EPS)


def frac_zero_std_groups(rewards: Tensor, atol: float = 1e-8) -> float:
    """Fraction of groups (rows of ``rewards [B, G]``) whose rewards are all equal.

    Such a group has zero group-relative advantage and teaches nothing (DAPO, Yu et al. 2025,
    "dynamic sampling" drops them).
    """
    r = _check_rewards(rewards)
    spread = r.amax(dim=1) - r.amin(dim=1)
    return (spread <= atol).float().mean().item()


@CRITIC_ESTIMATORS.register("gae")
def gae(
    rewards_tok: Tensor, values: Tensor, mask: Tensor, gamma: float = 1.0, lam: float = 0.95
) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimation over right-padded completions.

    Schulman et al. 2016, "High-Dimensional Continuous Control Using Generalized Advantage
    Estimation". With V = 0 after the last real token (episode end):
    ``delta_t = r_t + gamma * V_{t+1} - V_t`` and ``A_t = delta_t + gamma * lam * A_{t+1}``;
    returns ``R_t = A_t + V_t`` (the value-head target). Shapes: all ``[N, T]``; padded
    positions get advantage and return 0. The result is detached (targets carry no gradient).
    """
    if not (rewards_tok.shape == values.shape == mask.shape) or rewards_tok.dim() != 2:
        raise ValueError(
            f"gae needs rewards_tok, values, mask of one [N, T] shape, got "
            f"{tuple(rewards_tok.shape)}, {tuple(values.shape)}, {tuple(mask.shape)}"
        )
    if not (0.0 <= gamma <= 1.0 and 0.0 <= lam <= 1.0):
        raise ValueError(f"gae needs gamma and lam in [0, 1], got gamma={gamma}, lam={lam}")
    m = mask.to(torch.float32)
    r = rewards_tok.detach().float() * m
    v = values.detach().float() * m
    adv = torch.zeros_like(r)
    next_adv = torch.zeros_like(r[:, 0])
    next_v = torch.zeros_like(r[:, 0])
    for t in range(r.shape[1] - 1, -1, -1):
        delta = r[:, t] + gamma * next_v - v[:, t]
        next_adv = (delta + gamma * lam * next_adv) * m[:, t]
        adv[:, t] = next_adv
        next_v = v[:, t]
    return adv, (adv + v) * m


class Advantages(NamedTuple):
    """One step's advantages, and what the critic's update needs (None for group estimators)."""

    adv: Tensor  # [N] one per completion (group estimators) or [N, T] per token (gae)
    returns: Tensor | None = None  # [N, T] value targets
    old_values: Tensor | None = None  # [N, T] the critic's values before its update


class GroupAdvantage:
    """The stage of a group estimator: rewards [N] (less the summed KL when it is in the reward)
    -> advantages [N]. Nothing to update or checkpoint."""

    def __init__(self, fn: AdvantageFn, group_size: int):
        self.fn, self.G = fn, group_size

    def __call__(self, roll: Rollout, rewards: Tensor, kl: RewardKL) -> Advantages:
        if kl.ref_logp is not None:
            per_token = KL_ESTIMATORS.get(kl.estimator)(roll.logp, kl.ref_logp) * roll.completion_mask  # [N, T]
            rewards = rewards - kl.beta * per_token.sum(-1)
        return Advantages(self.fn(rewards.view(-1, self.G)).reshape(-1))  # [B, G] -> [N]

    def update(self, roll: Rollout, adv: Advantages) -> dict[str, float]:
        return {}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass
