"""The KL term to the frozen reference: where it goes and its coefficient, built once (``make``).

Three placements behind one interface (formulas: ``docs/algorithms.md``, "KL to the reference"):

- none (``algo.beta=0``): no reference model is loaded; nothing is added anywhere.
- ``loss``: ``beta * KL_t`` is added to each token's policy loss (GRPO, Shao et al. 2024).
- ``reward``: ``beta * KL_t`` is taken off the reward before the advantages (Ziegler et al. 2019;
  Ouyang et al. 2022): summed per completion for a group estimator, per token for the critic.

With ``algo.kl_target > 0`` the coefficient adapts to the measured KL after each step (Ziegler
et al. 2019, ``losses.adaptive_kl_update``): the loss's ``loss/kl`` statistic, or the reward's own
KL. The coefficient is the term's only state (checkpointed as ``beta``).
"""
from __future__ import annotations

from typing import Callable, NamedTuple

from torch import Tensor

from reasoner.losses import KL_ESTIMATORS, adaptive_kl_update
from reasoner.registry import Registry
from reasoner.types import Rollout

Reference = Callable[[], "Tensor | None"]  # reasoner.reference.Pending: [N, T] reference log-probs, or None


class RewardKL(NamedTuple):
    """What the advantage stage takes off the rewards."""

    ref_logp: Tensor | None  # [N, T] reference log-probs, None when the KL is not in the reward
    beta: float
    estimator: str  # a name in losses.KL_ESTIMATORS


class NoKL:
    """beta = 0: no reference, no term."""

    def __init__(self, beta: float = 0.0, estimator: str = "k3", target: float = 0.0, horizon: int = 100):
        self.beta, self.estimator, self.target, self.horizon = beta, estimator, target, horizon

    def for_reward(self, roll: Rollout, ref: Reference) -> RewardKL:
        return RewardKL(None, 0.0, self.estimator)

    def for_loss(self, ref: Reference) -> tuple[Reference, float]:
        """(the reference the loss adds ``beta * KL`` to, beta)."""
        return _NONE, 0.0

    def measured(self, update_stats: dict[str, float]) -> float:
        """The last step's mean per-token KL to the reference (logged as ``kl/mean``; drives the adaptive beta)."""
        return update_stats.get("loss/kl", 0.0)

    def adapt(self, update_stats: dict[str, float]) -> None:
        if self.target > 0 and self.beta > 0:
            self.beta = adaptive_kl_update(self.beta, self.measured(update_stats), self.target, self.horizon)


def _none() -> None:
    return None


_NONE: Reference = _none
PLACEMENTS: Registry[type[NoKL]] = Registry("KL placement")


@PLACEMENTS.register("loss")
class KLInLoss(NoKL):
    def for_loss(self, ref: Reference) -> tuple[Reference, float]:
        return ref, self.beta


@PLACEMENTS.register("reward")
class KLInReward(NoKL):
    _kl = 0.0  # mean per-token KL of the last rollout, for the adaptive coefficient

    def for_reward(self, roll: Rollout, ref: Reference) -> RewardKL:
        ref_logp = ref()
        mask = roll.completion_mask
        self._kl = float((KL_ESTIMATORS.get(self.estimator)(roll.logp, ref_logp) * mask).sum() / mask.sum().clamp_min(1))
        return RewardKL(ref_logp, self.beta, self.estimator)

    def measured(self, update_stats: dict[str, float]) -> float:
        return self._kl


def make(placement: str, beta: float, estimator: str, target: float, horizon: int) -> NoKL:
    """The run's KL term (``algo.kl_in``, ``algo.beta``, ``algo.kl_estimator``, ``algo.kl_target``,
    ``algo.kl_horizon``)."""
    kind = NoKL if beta == 0 else PLACEMENTS.get(placement)
    return kind(beta, estimator, target, horizon)
