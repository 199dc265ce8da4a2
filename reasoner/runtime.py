"""Building the run's parts from the config: device, seeds, models, sampler, optimizer, data."""
from __future__ import annotations

import copy
import random

import numpy as np
import torch

from reasoner import distributed, lora, threads
from reasoner.config import Config, ConfigError
from reasoner.types import Problem


def setup(cfg: Config) -> tuple[torch.device, distributed.DistInfo]:
    """Step 1, before any model is loaded: config checks, seeds, device, process group."""
    lora.check_config(cfg.model, cfg.sampling.backend)
    distributed.check_config(cfg.run.batch_size, distributed.env_info().world)
    seed_everything(cfg.run.seed)  # the same on every rank: identical initial weights and adapters
    device = distributed.local_device(pick_device(cfg.run.device))
    return device, distributed.init(device)


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


def prepare_policy(model, cfg: Config):
    """Threads, gradient checkpointing and LoRA adapters as configured; returns the policy to train."""
    threads.configure(model, cfg.run.threads)
    if cfg.model.gradient_checkpointing:
        if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    if lora.enabled(cfg.model):
        model = lora.wrap(model, cfg.model)
    return model


def step_generator(seed: int, step: int) -> torch.Generator:
    """The minibatch-shuffle generator of one step: a function of (seed, step), so resumes replay it."""
    return torch.Generator().manual_seed(seed * 1_000_033 + step)


def make_reference(policy, cfg: Config):
    """A frozen copy of the starting policy, or None when beta == 0 (no memory, no passes).

    With LoRA the reference is the policy itself with its adapters disabled (no copy).
    """
    if cfg.algo.beta == 0:
        return None
    if lora.is_peft(policy):
        return lora.AdapterOffReference(policy)
    ref = copy.deepcopy(policy).eval()
    ref.requires_grad_(False)
    if cfg.run.parallel == "fsdp" and distributed.active():
        distributed.fsdp_shard(ref)  # sharded like the policy: no full copy per rank
    return ref


def make_critic(policy, cfg: Config):
    """The value model of algo.advantage=gae (a copy of the policy's backbone + a value head), else None."""
    if cfg.algo.advantage != "gae":
        return None
    if distributed.env_info().world > 1:
        raise ConfigError("algo.advantage=gae runs in one process only (the critic is not wrapped for DDP/FSDP)")
    from reasoner.critic import Critic

    return Critic(policy, cfg)


def make_sampler(model, tokenizer, cfg: Config, device: torch.device):
    if cfg.sampling.backend == "vllm":
        from reasoner.sampler.vllm import VLLMSampler

        return VLLMSampler(model, tokenizer, cfg)
    from reasoner.sampler.transformers import TransformersSampler

    lockstep = cfg.run.parallel == "fsdp" and distributed.env_info().world > 1  # sharded weights: same calls on every rank
    return TransformersSampler(model, tokenizer, device=device, autocast=cfg.model.autocast, lockstep=lockstep)


def make_optimizer(model, cfg: Config):
    o = cfg.optim
    params = [p for p in model.parameters() if p.requires_grad]
    fused = all(p.device.type in ("cpu", "cuda") and p.dtype == torch.float32 for p in params)
    opt = torch.optim.AdamW(params, lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay, fused=fused)
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
    """Deterministic batches: epoch e is a permutation seeded by (seed, e); the cursor is the step.

    ``batch_size`` is the global batch; under torchrun rank r of W gets its contiguous
    ``batch_size / W`` problems of it (``batch(step)``), so groups stay whole on one rank.
    """

    def __init__(self, problems: list[Problem], batch_size: int, seed: int, rank: int = 0, world: int = 1):
        if not problems:
            raise ValueError("the training set is empty")
        if batch_size % world:
            raise ValueError(f"batch_size={batch_size} is not divisible by the world size {world}")
        self.problems, self.batch_size, self.seed = problems, batch_size, seed
        self.rank, self.world = rank, world

        self._perms: dict[int, list[int]] = {}

    def _perm(self, epoch: int) -> list[int]:
        if epoch not in self._perms:
            g = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
            self._perms = {epoch: torch.randperm(len(self.problems), generator=g).tolist()}
        return self._perms[epoch]

    def global_batch(self, step: int) -> list[Problem]:
        n = len(self.problems)
        return [self.problems[self._perm(k // n)[k % n]]
                for k in range(step * self.batch_size, (step + 1) * self.batch_size)]

    def batch(self, step: int) -> list[Problem]:
        """This rank's share of the step's global batch (all of it in one process)."""
        per = self.batch_size // self.world
        return self.global_batch(step)[self.rank * per:(self.rank + 1) * per]
