"""Building the run's parts from the config: device, seeds, models, sampler, optimizer, data."""
from __future__ import annotations

import copy
import random

import numpy as np
import torch

from reasoner.config import Config
from reasoner.types import Problem


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("run.device=cuda but CUDA is not available; use run.device=cpu or auto")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def make_reference(policy, cfg: Config):
    """A frozen copy of the starting policy, or None when beta == 0 (no memory, no passes)."""
    if cfg.algo.beta == 0:
        return None
    ref = copy.deepcopy(policy).eval()
    ref.requires_grad_(False)
    return ref


def make_sampler(model, tokenizer, cfg: Config, device: torch.device):
    if cfg.sampling.backend == "vllm":
        from reasoner.sampler.vllm import VLLMSampler

        return VLLMSampler(model, tokenizer, cfg)
    from reasoner.sampler.transformers import TransformersSampler

    return TransformersSampler(model, tokenizer, device=device, autocast=cfg.model.autocast)


def make_optimizer(model, cfg: Config):
    o = cfg.optim
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay)
    total = max(cfg.run.steps, 1)

    def factor(step: int) -> float:
        if step < o.warmup_steps:
            return (step + 1) / o.warmup_steps
        frac = (step - o.warmup_steps) / max(total - o.warmup_steps, 1)
        if o.schedule == "cosine":
            return 0.5 * (1 + np.cos(np.pi * min(frac, 1.0)))
        if o.schedule == "linear":
            return max(1.0 - frac, 0.0)
        return 1.0

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)


class ProblemStream:
    """Deterministic batches: epoch e is a permutation seeded by (seed, e); the cursor is the step."""

    def __init__(self, problems: list[Problem], batch_size: int, seed: int):
        if not problems:
            raise ValueError("the training set is empty")
        self.problems, self.batch_size, self.seed = problems, batch_size, seed

        self._perms: dict[int, list[int]] = {}

    def _perm(self, epoch: int) -> list[int]:
        if epoch not in self._perms:
            g = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
            self._perms = {epoch: torch.randperm(len(self.problems), generator=g).tolist()}
        return self._perms[epoch]

    def batch(self, step: int) -> list[Problem]:
        n = len(self.problems)
        return [self.problems[self._perm(k // n)[k % n]]
                for k in range(step * self.batch_size, (step + 1) * self.batch_size)]
