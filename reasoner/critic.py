"""The value model of ``algo.advantage=gae`` (classic RLHF-PPO): a copy of the policy's backbone
plus a linear value head, with its own AdamW optimizer.

Per-token rewards are the task score on the last real token minus ``beta * KL_t`` when the
KL sits in the reward (``reasoner.losses.kl_penalized_rewards``); GAE (``reasoner.advantages.gae``)
turns them and the critic's values into per-token advantages and value targets (returns).

Under torchrun the critic trains through DDP (``run.parallel=ddp``; FSDP is not supported for the
critic): each rank holds a full copy and its shard of the batch, the value loss is scaled
(``distributed.loss_scale``) so the ranks' average is the token mean over the global batch, and
the whitening of the advantages and the explained variance use sums over all ranks; one process
computes exactly what it did before. With LoRA the copied backbone carries the adapters and is
trained in full. Its weights and optimizer state go into the trainer's checkpoint state
(``checkpoint_state`` / ``load_checkpoint_state``): identical on every rank, written by rank 0
and loaded by all.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from reasoner import distributed
from reasoner.advantages import Advantages, gae
from reasoner.config import OptimConfig
from reasoner.kl import RewardKL
from reasoner.engine import FAST, Engine
from reasoner.losses import kl_penalized_rewards, value_loss
from reasoner.models import fast
from reasoner.optim import Optimizer
from reasoner.types import Rollout

WHITEN_EPS = 1e-8


@dataclass(frozen=True)
class CriticParams:
    """What the critic reads (``algo.gamma``, ``lam``, ``critic_lr``, ``value_clip``, ``ppo_epochs``,
    ``minibatches``)."""

    gamma: float = 1.0
    lam: float = 0.95
    lr: float = 1e-4
    value_clip: float = 0.2
    epochs: int = 1
    minibatches: int = 1

    @classmethod
    def of(cls, algo) -> "CriticParams":
        return cls(algo.gamma, algo.lam, algo.critic_lr, algo.value_clip, algo.ppo_epochs, algo.minibatches)


def _backbone(policy: nn.Module) -> nn.Module:
    body = fast.backbone_of(policy)
    if body is None:
        raise ValueError(f"algo.advantage=gae needs an HF causal LM with a backbone attribute; "
                         f"{type(policy).__name__} has none")
    return body


def _hidden_size(body: nn.Module) -> int:
    cfg = body.config.get_text_config() if hasattr(body.config, "get_text_config") else body.config
    return int(cfg.hidden_size)


def _masked_moments(x: Tensor, m: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and population variance of ``x`` over the entries where ``m`` (float) is 1, on all ranks."""
    total = distributed.all_sum_tensor  # the tensor itself in one process
    n = total(m.sum()).clamp_min(1)
    mean = total((x * m).sum()) / n
    return mean, total((((x - mean) * m) ** 2).sum()) / n


def masked_whiten(x: Tensor, mask: Tensor, eps: float = WHITEN_EPS) -> Tensor:
    """(x - mean) / (std + eps) with mean and (population) std over the masked entries (of every
    rank's shard under torchrun: the global batch); 0 off the mask."""
    m = mask.to(x.dtype)
    mean, var = _masked_moments(x, m)
    return (x - mean) / (var.sqrt() + eps) * m


def explained_variance(pred: Tensor, target: Tensor, mask: Tensor) -> float:
    """1 - Var(target - pred) / Var(target) over the masked entries (of the global batch under
    torchrun); nan when Var(target) = 0."""
    if distributed.active():
        m = mask.to(torch.float32)
        var = _masked_moments(target.float(), m)[1]
        return float("nan") if var <= 0 else float(1 - _masked_moments((target - pred).float(), m)[1] / var)
    sel = mask.bool()
    t, p = target[sel].float(), pred[sel].float()
    var = t.var(unbiased=False) if t.numel() else t.new_tensor(0.0)
    return float("nan") if var <= 0 else float(1 - (t - p).var(unbiased=False) / var)


class Critic(nn.Module):
    """V(s_t) for every completion token: the value of the state before token t is generated."""

    def __init__(self, policy: nn.Module, params: CriticParams = CriticParams(), optim: OptimConfig | None = None,
                 engine: Engine = FAST):
        super().__init__()
        optim = optim or OptimConfig()
        self.params, self.engine = params, engine
        self.backbone = copy.deepcopy(_backbone(policy))
        self.backbone.requires_grad_(True)
        self.head = nn.Linear(_hidden_size(self.backbone), 1)
        nn.init.zeros_(self.head.weight)  # V = 0 at the start: advantages begin as discounted rewards
        nn.init.zeros_(self.head.bias)
        self.head.to(next(self.backbone.parameters()).device)
        # constant lr; float32 masters when the copied backbone is bf16 (reasoner.precision)
        self.opt = Optimizer(self, OptimConfig(params.lr, optim.weight_decay, optim.betas, optim.grad_clip,
                                               schedule="constant"), total_steps=1, master=True)
        # what update() trains through: DDP under torchrun (shares these parameters), self otherwise;
        # kept out of the module tree so state_dict and children stay the critic's own
        self.__dict__["trained"] = distributed.wrap(self, "ddp")

    @property
    def device(self) -> torch.device:
        return self.head.weight.device

    def forward(self, prompt_ids: Tensor, prompt_mask: Tensor, completion_ids: Tensor,
                completion_mask: Tensor) -> Tensor:
        """Values [N, T]: position t reads the hidden state that predicts completion token t
        (as in ``Engine.logp``); 0 off the completion mask."""
        d = self.device
        prompt_ids, prompt_mask = prompt_ids.to(d), prompt_mask.to(d)
        completion_ids, completion_mask = completion_ids.to(d), completion_mask.to(d)
        h = self.engine.hidden(self.backbone, prompt_ids, prompt_mask, completion_ids, completion_mask)
        return self.head(h.float()).squeeze(-1) * completion_mask

    def values(self, roll: Rollout) -> Tensor:
        return self(roll.prompt_ids, roll.prompt_mask, roll.completion_ids, roll.completion_mask)

    @torch.no_grad()
    def advantages(self, roll: Rollout, scores: Tensor, kl: RewardKL) -> Advantages:
        """adv [N, T] whitened over the completion tokens, returns [N, T], old values [N, T].

        ``scores [N]`` land on each completion's last real token; when ``kl.ref_logp`` is given
        every token also gets ``-kl.beta * KL_t``.
        """
        self.eval()
        mask = roll.completion_mask.to(self.device)
        old_v = self.values(roll)
        logp = roll.logp.to(self.device)
        ref_logp, beta = (logp, 0.0) if kl.ref_logp is None else (kl.ref_logp.to(self.device), kl.beta)
        rewards = kl_penalized_rewards(scores.to(self.device), logp, ref_logp, mask, beta, kl.estimator)
        adv, returns = gae(rewards, old_v, mask, self.params.gamma, self.params.lam)
        return Advantages(masked_whiten(adv, mask), returns, old_v)

    def update(self, roll: Rollout, adv: Advantages) -> dict[str, float]:
        """``epochs`` passes over ``minibatches`` minibatches of the clipped value loss.

        Under torchrun each rank's loss is scaled by ``distributed.loss_scale`` (1.0 in one process),
        so DDP's gradient average is the gradient of the token mean over all ranks' tokens, and the
        logged "critic/value_loss" (averaged over ranks by ``reduce_metrics``) is that global mean."""
        p, returns, old_values = self.params, adv.returns, adv.old_values
        N = returns.shape[0]
        mask = roll.completion_mask.to(self.device)
        losses: list[float] = []
        self.train()
        for _ in range(p.epochs):
            for mb in torch.arange(N).split(N // p.minibatches):
                self.opt.zero_grad()
                scale = distributed.loss_scale(float(mask[mb].sum()), "token_mean")
                v = self.trained(roll.prompt_ids[mb], roll.prompt_mask[mb], roll.completion_ids[mb],
                                 roll.completion_mask[mb])
                loss = value_loss(v, old_values[mb], returns[mb], mask[mb], p.value_clip) * scale
                loss.backward()
                self.opt.step(finite=bool(torch.isfinite(loss)))
                losses.append(float(loss.detach()))
        return {"critic/value_loss": sum(losses) / len(losses),
                "critic/explained_variance": explained_variance(old_values, returns, mask)}

    def checkpoint_state(self) -> dict:
        return {"model": self.state_dict(), "optimizer": self.opt.state_dict()}

    def load_checkpoint_state(self, state: dict) -> None:
        self.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])


class CriticAdvantage:
    """The stage of ``algo.advantage=gae``: the critic's advantages, then its own update; its
    weights and optimizer go into the trainer's checkpoint."""

    def __init__(self, critic: Critic):
        self.critic = critic

    def __call__(self, roll: Rollout, rewards: Tensor, kl: RewardKL) -> Advantages:
        return self.critic.advantages(roll, rewards, kl)

    def update(self, roll: Rollout, adv: Advantages) -> dict[str, float]:
        return self.critic.update(roll, adv)

    def state_dict(self) -> dict:
        return {"critic": self.critic.checkpoint_state()}

    def load_state_dict(self, state: dict) -> None:
        self.critic.load_checkpoint_state(state["critic"])
