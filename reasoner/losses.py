"""Policy loss, loss aggregation and KL estimators: PURE functions over [N, T] tensors.

Four registries, each read by ``policy_loss`` through the names in ``LossParams``: the ratio level
(``RATIO_LEVELS``: token | sequence, GSPO), the policy-loss kind (``POLICY_LOSSES``: ppo_clip |
cispo), the aggregation (``AGGREGATIONS``) and the KL estimator (``KL_ESTIMATORS``).
Formulas: ``docs/algorithms.md`` ("Policy loss", "KL to the reference model"). Names:
``logp`` current policy, ``old_logp`` the policy that sampled, ``ref_logp`` the frozen
reference, ``adv`` advantages, ``mask`` True on real completion tokens (right padded).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, NamedTuple

import torch
from torch import Tensor

from reasoner.registry import Registry
from reasoner.types import LossOut

KLEstimator = Callable[[Tensor, Tensor], Tensor]
Aggregation = Callable[[Tensor, Tensor, int], Tensor]
LogRatio = Callable[[Tensor, Tensor, Tensor], Tensor]  # (logp, old_logp, mask) [N, T] -> log ratio [N, T]
KL_ESTIMATORS: Registry[KLEstimator] = Registry("KL estimator")
AGGREGATIONS: Registry[Aggregation] = Registry("loss aggregation")
RATIO_LEVELS: Registry[LogRatio] = Registry("ratio level")
POLICY_LOSSES: Registry["PolicyLossKind"] = Registry("policy loss")


@dataclass(frozen=True)
class LossParams:
    """What ``policy_loss`` reads (from ``algo``; ``norm_len`` 0 there means sampling.max_new_tokens)."""

    loss_agg: str = "seq_mean_token_mean"  # a name in AGGREGATIONS
    kl_estimator: str = "k3"  # a name in KL_ESTIMATORS
    eps_low: float = 0.2
    eps_high: float = 0.2
    dual_clip: float = 0.0  # 0 = off, else c > 1
    entropy_coef: float = 0.0
    norm_len: int = 1  # the constant of seq_mean_token_sum_norm
    policy_loss: str = "ppo_clip"  # a name in POLICY_LOSSES
    ratio_level: str = "token"  # a name in RATIO_LEVELS

    def __post_init__(self):
        if not (0.0 <= self.eps_low < 1.0 and self.eps_high >= 0.0):
            raise ValueError(f"need 0 <= eps_low < 1 and eps_high >= 0, got {self.eps_low}, {self.eps_high}")
        if self.dual_clip != 0 and self.dual_clip <= 1:
            raise ValueError(f"dual_clip must be 0 (off) or > 1, got {self.dual_clip}")
        AGGREGATIONS.get(self.loss_agg), KL_ESTIMATORS.get(self.kl_estimator)  # unknown names: KeyError
        RATIO_LEVELS.get(self.ratio_level)
        if not POLICY_LOSSES.get(self.policy_loss).dual_clip and self.dual_clip:
            raise ValueError(f"dual_clip={self.dual_clip} needs a policy loss with dual clip "
                             f"({', '.join(dual_clip_losses())}), got {self.policy_loss!r}")

    @classmethod
    def of(cls, algo, max_new_tokens: int) -> "LossParams":
        """From a config's ``algo`` section."""
        return cls(loss_agg=algo.loss_agg, kl_estimator=algo.kl_estimator, eps_low=algo.eps_low,
                   eps_high=algo.eps_high, dual_clip=algo.dual_clip, entropy_coef=algo.entropy_coef,
                   norm_len=algo.norm_len or max_new_tokens, policy_loss=algo.policy_loss,
                   ratio_level=algo.ratio_level)

# --- KL estimators (Schulman 2020, "Approximating KL Divergence"), log_ratio = ref - new ----


@KL_ESTIMATORS.register("k1")
def kl_k1(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """-log_ratio = logp - ref_logp: unbiased, high variance, can be negative."""
    return logp - ref_logp


@KL_ESTIMATORS.register("k2")
def kl_k2(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """0.5 * log_ratio^2: biased, low variance, >= 0."""
    return 0.5 * (ref_logp - logp) ** 2


@KL_ESTIMATORS.register("k3")
def kl_k3(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """exp(log_ratio) - log_ratio - 1: unbiased, low variance, >= 0 (used by GRPO)."""
    log_ratio = ref_logp - logp
    return torch.exp(log_ratio) - log_ratio - 1


# --- aggregation of a per-token quantity into one scalar ---------------------------------


@AGGREGATIONS.register("seq_mean_token_mean")
def seq_mean_token_mean(x: Tensor, mask: Tensor, norm_len: int) -> Tensor:
    """Mean over the tokens of each sequence, then mean over sequences (original GRPO).

    Every completion weighs the same, so a token of a short completion weighs more.
    """
    m = mask.to(x.dtype)
    per_seq = (x * m).sum(-1) / m.sum(-1).clamp(min=1.0)
    return per_seq.mean()


@AGGREGATIONS.register("token_mean")
def token_mean(x: Tensor, mask: Tensor, norm_len: int) -> Tensor:
    """Sum over all tokens of the batch / number of tokens (DAPO): every token weighs the same."""
    m = mask.to(x.dtype)
    return (x * m).sum() / m.sum().clamp(min=1.0)


@AGGREGATIONS.register("seq_mean_token_sum_norm")
def seq_mean_token_sum_norm(x: Tensor, mask: Tensor, norm_len: int) -> Tensor:
    """Token sum of each sequence / a constant ``norm_len``, mean over sequences (Dr. GRPO).

    Every token weighs the same and the weight does not depend on the batch's lengths.
    """
    if norm_len <= 0:
        raise ValueError(f"seq_mean_token_sum_norm needs norm_len > 0 (max completion length), got {norm_len}")
    m = mask.to(x.dtype)
    return (x * m).sum() / (x.shape[0] * norm_len)


# --- the importance ratio: per token, or one per sequence (GSPO) ------------------------------


@RATIO_LEVELS.register("token")
def token_log_ratio(logp: Tensor, old_logp: Tensor, mask: Tensor) -> Tensor:
    """``log rho_t = logp_t - old_logp_t``, one ratio per token (PPO, Schulman et al. 2017; GRPO)."""
    return logp - old_logp


@RATIO_LEVELS.register("sequence")
def sequence_log_ratio(logp: Tensor, old_logp: Tensor, mask: Tensor) -> Tensor:
    """``log s_i = (1/|y_i|) sum_t m_t (logp_t - old_logp_t)``, the same for every token of row i.

    Zheng et al. 2025, "Group Sequence Policy Optimization" (GSPO): the length-normalised
    sequence likelihood ratio, clipped as a whole. The gradient flows through the mean, so each
    token of row i gets ``s_i / |y_i|`` times its log-prob gradient (GSPO's gradient analysis; TRL
    ``importance_sampling_level="sequence"``). A row without real tokens gets ratio 1.
    """
    m = mask.to(logp.dtype)
    per_seq = ((logp - old_logp) * m).sum(-1, keepdim=True) / m.sum(-1, keepdim=True).clamp(min=1.0)
    return per_seq.expand_as(logp)


# --- the policy loss kinds: clipped surrogate (PPO) and clipped IS weight (CISPO) ----------------


def _check_inputs(logp: Tensor, old_logp: Tensor, adv: Tensor, mask: Tensor) -> Tensor:
    """Validate shapes; return ``adv`` as [N, T]."""
    if logp.dim() != 2 or old_logp.shape != logp.shape or mask.shape != logp.shape:
        raise ValueError(
            f"logp, old_logp, mask must share one [N, T] shape, got {tuple(logp.shape)}, "
            f"{tuple(old_logp.shape)}, {tuple(mask.shape)}"
        )
    if mask.dtype != torch.bool:
        raise TypeError(f"mask must be a bool tensor, got {mask.dtype}")
    if adv.dim() == 1 and adv.shape[0] == logp.shape[0]:
        adv = adv[:, None]
    elif adv.shape != logp.shape:
        raise ValueError(f"adv must be [N] or [N, T] with N, T = {tuple(logp.shape)}, got {tuple(adv.shape)}")
    return adv.to(logp.dtype).detach()


def clipped_surrogate(ratio: Tensor, adv: Tensor, eps_low: float, eps_high: float, dual_clip: float = 0.0) -> Tensor:
    """Per-token PPO loss ``-min(rho*A, clip(rho, 1-eps_low, 1+eps_high)*A)`` (Schulman et al. 2017).

    Clip-higher (separate ``eps_high``): DAPO, Yu et al. 2025. With ``dual_clip = c > 1`` the
    loss of tokens with A < 0 is also bounded by ``-c*A`` (Ye et al. 2020, "Mastering Complex
    Control in MOBA Games with Deep RL", dual-clip PPO).
    """
    loss = -torch.min(ratio * adv, ratio.clamp(1 - eps_low, 1 + eps_high) * adv)
    if dual_clip > 1:
        loss = torch.where(adv < 0, torch.min(loss, -dual_clip * adv), loss)
    return loss


def cispo_surrogate(ratio: Tensor, logp: Tensor, adv: Tensor, eps_high: float) -> Tensor:
    """Per-token CISPO loss ``-sg(min(rho, 1 + eps_high)) * A * logp``.

    Chen et al. 2025, "MiniMax-M1: Scaling Test-Time Compute Efficiently with Lightning
    Attention" (CISPO): the importance weight is clipped and detached, not the update,
    so every token keeps its gradient ``-w * A``. No lower bound, as in the paper's experiments
    and TRL's ``loss_type="cispo"`` (whose ``epsilon_high`` is the bound itself, ``1 + eps_high`` here).
    """
    return -ratio.detach().clamp(max=1 + eps_high) * adv * logp


class PolicyLossKind(NamedTuple):
    """One policy-loss formula: its per-token loss, which tokens its clip touched, and whether
    ``dual_clip`` applies to it."""

    per_token: Callable[[Tensor, Tensor, Tensor, "LossParams"], Tensor]  # (ratio, logp, adv, params) -> [N, T]
    clipped: Callable[[Tensor, Tensor, "LossParams"], Tensor]  # (ratio, adv, params) -> bool [N, T]
    dual_clip: bool


def _ppo_clip_loss(ratio: Tensor, logp: Tensor, adv: Tensor, p: LossParams) -> Tensor:
    return clipped_surrogate(ratio, adv, p.eps_low, p.eps_high, p.dual_clip)


def _ppo_clipped(ratio: Tensor, adv: Tensor, p: LossParams) -> Tensor:
    """Tokens the clip holds at a bound (their gradient is 0)."""
    return ((ratio > 1 + p.eps_high) & (adv > 0)) | ((ratio < 1 - p.eps_low) & (adv < 0))


def _cispo_loss(ratio: Tensor, logp: Tensor, adv: Tensor, p: LossParams) -> Tensor:
    return cispo_surrogate(ratio, logp, adv, p.eps_high)


def _cispo_clipped(ratio: Tensor, adv: Tensor, p: LossParams) -> Tensor:
    """Tokens whose IS weight was capped at 1 + eps_high (their gradient is scaled, not 0)."""
    return ratio > 1 + p.eps_high


POLICY_LOSSES.register("ppo_clip")(PolicyLossKind(_ppo_clip_loss, _ppo_clipped, dual_clip=True))
POLICY_LOSSES.register("cispo")(PolicyLossKind(_cispo_loss, _cispo_clipped, dual_clip=False))


def dual_clip_losses() -> list[str]:
    """The policy losses ``dual_clip`` applies to."""
    return [name for name in POLICY_LOSSES if POLICY_LOSSES.get(name).dual_clip]


def _masked_stats(x: Tensor, mask: Tensor) -> tuple[float, float, float]:
    """(mean, min, max) of ``x`` over masked tokens; NaN when there is none."""
    vals = x[mask]
    if vals.numel() == 0:
        return math.nan, math.nan, math.nan
    return vals.mean().item(), vals.min().item(), vals.max().item()


def _diagnostics(ratio, adv, clipped, mask, cfg, pg_loss, kl, entropy, weights) -> dict[str, float]:
    with torch.no_grad():
        _, rmin, rmax = _masked_stats(ratio, mask)
        stats = {
            "loss/policy": pg_loss.item(),
            "loss/clip_frac": _masked_stats(clipped.float(), mask)[0],
            "loss/ratio_min": rmin,
            "loss/ratio_max": rmax,
        }
        if cfg.dual_clip > 1:
            dual = (adv < 0) & (ratio > cfg.dual_clip)
            stats["loss/dual_clip_frac"] = _masked_stats(dual.float(), mask)[0]
        if kl is not None:
            stats["loss/kl"] = _masked_stats(kl, mask)[0]
        if entropy is not None:
            stats["loss/entropy"] = _masked_stats(entropy, mask)[0]
        if weights is not None:
            stats["loss/is_weight_mean"] = _masked_stats(weights, mask)[0]
            stats["loss/is_zero_frac"] = _masked_stats((weights == 0).float(), mask)[0]
    return stats


def policy_loss(
    logp: Tensor,
    old_logp: Tensor,
    adv: Tensor,
    mask: Tensor,
    cfg: LossParams,
    *,
    ref_logp: Tensor | None = None,
    beta: float = 0.0,
    entropy: Tensor | None = None,
    token_weights: Tensor | None = None,
) -> LossOut:
    """The policy loss of ``cfg.policy_loss`` on the ratio of ``cfg.ratio_level`` (+ beta * KL to
    ``ref_logp``, - entropy bonus), aggregated by ``cfg.loss_agg``.

    Shapes: ``logp, old_logp, mask [N, T]``, ``adv [N]`` (one per completion) or ``[N, T]``,
    ``ref_logp, entropy [N, T]`` or None. ``token_weights [N, T]``, when given, multiplies the
    policy term per token (not the KL). Returns the differentiable scalar and detached
    float stats: loss/policy, loss/clip_frac, loss/ratio_min, loss/ratio_max, and loss/kl (when
    ``ref_logp`` is given, whatever ``beta``), loss/entropy (when ``entropy`` is given),
    loss/is_weight_mean and loss/is_zero_frac (when ``token_weights`` are given).
    """
    adv = _check_inputs(logp, old_logp, adv, mask)
    aggregate, norm_len, kind = AGGREGATIONS.get(cfg.loss_agg), cfg.norm_len, POLICY_LOSSES.get(cfg.policy_loss)
    ratio = torch.exp(RATIO_LEVELS.get(cfg.ratio_level)(logp, old_logp.detach(), mask))
    per_token = kind.per_token(ratio, logp, adv, cfg)
    if token_weights is not None:  # train/inference mismatch correction (reasoner.mismatch); the KL is not weighted
        per_token = per_token * token_weights.detach()
    pg_loss = aggregate(per_token.detach(), mask, norm_len)
    kl = None
    if ref_logp is not None:
        if ref_logp.shape != logp.shape:
            raise ValueError(f"ref_logp must be {tuple(logp.shape)}, got {tuple(ref_logp.shape)}")
        kl = KL_ESTIMATORS.get(cfg.kl_estimator)(logp, ref_logp.detach())
        if beta > 0:
            per_token = per_token + beta * kl
    if cfg.entropy_coef > 0:
        if entropy is None:
            raise ValueError("entropy_coef > 0 needs the per-token entropy (token_entropy(logits))")
        per_token = per_token - cfg.entropy_coef * entropy
    loss = aggregate(per_token, mask, norm_len)
    ratio, detached = ratio.detach(), [None if x is None else x.detach() for x in (kl, entropy, token_weights)]
    return LossOut(loss, _diagnostics(ratio, adv, kind.clipped(ratio, adv, cfg), mask, cfg, pg_loss, *detached))


# --- KL in the reward, adaptive coefficient, entropy, value loss ---------------------------


def kl_penalized_rewards(
    scores: Tensor, logp: Tensor, ref_logp: Tensor, mask: Tensor, beta: float, estimator: str | KLEstimator = "k1"
) -> Tensor:
    """Per-token rewards for ``kl_in == "reward"``: ``-beta * KL_t``, plus the task score on the
    last real token of each completion (Ziegler et al. 2019; DeepSpeed-Chat). [N] -> [N, T], detached.
    """
    if logp.dim() != 2 or ref_logp.shape != logp.shape or mask.shape != logp.shape:
        raise ValueError(f"logp, ref_logp, mask must share one [N, T] shape, got "
                         f"{tuple(logp.shape)}, {tuple(ref_logp.shape)}, {tuple(mask.shape)}")
    if scores.shape != (logp.shape[0],):
        raise ValueError(f"scores must be [N] = [{logp.shape[0]}], got {tuple(scores.shape)}")
    lengths = mask.sum(-1)
    if (lengths == 0).any():
        raise ValueError("every completion needs at least one real token to carry its reward")
    kl_fn = KL_ESTIMATORS.get(estimator) if isinstance(estimator, str) else estimator
    with torch.no_grad():
        m = mask.to(torch.float32)
        rewards = -beta * kl_fn(logp.float(), ref_logp.float()) * m
        last = (lengths - 1).long()
        rewards[torch.arange(logp.shape[0]), last] += scores.float()
    return rewards


def adaptive_kl_update(beta: float, kl: float, target: float, horizon: int, n_steps: int = 1) -> float:
    """Ziegler et al. 2019 ("Fine-Tuning LMs from Human Preferences") adaptive coefficient:
    ``e = clip(kl / target - 1, -0.2, 0.2)``, ``beta <- beta * (1 + e * n_steps / horizon)``.
    """
    if target <= 0 or horizon <= 0:
        raise ValueError(f"adaptive KL needs target > 0 and horizon > 0, got {target}, {horizon}")
    error = min(max(kl / target - 1.0, -0.2), 0.2)
    return beta * (1.0 + error * n_steps / horizon)


@dataclass
class AdaptiveKL:
    """The adaptive coefficient as a tiny stateful holder: ``beta = ctl.update(measured_kl)``."""

    beta: float
    target: float
    horizon: int

    def update(self, kl: float, n_steps: int = 1) -> float:
        self.beta = adaptive_kl_update(self.beta, kl, self.target, self.horizon, n_steps)
        return self.beta


def token_entropy(logits: Tensor) -> Tensor:
    """Entropy of the next-token distribution, [N, T, V] -> [N, T], in float32 via log_softmax.

    Tokens with probability 0 (logit -inf) contribute 0, not NaN.
    """
    logp = torch.log_softmax(logits.float(), dim=-1)
    p = logp.exp()
    return -(p * torch.where(p > 0, logp, torch.zeros_like(logp))).sum(-1)


def value_loss(values: Tensor, old_values: Tensor, returns: Tensor, mask: Tensor, clip: float = 0.2) -> Tensor:
    """Clipped value loss for a critic (PPO, as in OpenAI baselines / OpenRLHF):
    ``0.5 * max((V - R)^2, (old_V + clip(V - old_V, -c, c) - R)^2)``, token mean over ``mask``.
    """
    clipped = old_values + (values - old_values).clamp(-clip, clip)
    per_token = 0.5 * torch.max((values - returns) ** 2, (clipped - returns) ** 2)
    return token_mean(per_token, mask, 0)
