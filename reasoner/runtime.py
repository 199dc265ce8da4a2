"""Building the run's parts from the config: device, seeds, models, sampler, optimizer, data."""
from __future__ import annotations

import copy
import random

import numpy as np
import torch

from reasoner import distributed, lora, precision, threads
from reasoner.config import Config, ConfigError
from reasoner.types import Problem


def setup(cfg: Config) -> tuple[torch.device, distributed.DistInfo]:
    """Step 1, before any model is loaded: config checks, seeds, device, process group."""
    lora.check_config(cfg.model, cfg.sampling.backend)
    distributed.check_config(cfg.run.batch_size, distributed.env_info().world)
    precision.check(cfg.model.precision, sharded(cfg))
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


def sharded(cfg: Config) -> bool:
    """FSDP2 shards the weights (run.parallel=fsdp under torchrun)."""
    return cfg.run.parallel == "fsdp" and distributed.env_info().world > 1


def prepare_policy(model, cfg: Config, device: torch.device):
    """Precision, threads, gradient checkpointing and LoRA adapters as configured;
    returns (the policy to train, its resolved precision.Precision)."""
    prec = precision.resolve(cfg.model.precision, device, sum(p.numel() for p in model.parameters()), sharded(cfg))
    model.to(prec.compute)
    threads.configure(model, cfg.run.threads)
    if cfg.model.gradient_checkpointing:
        if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    if lora.enabled(cfg.model):
        model = lora.wrap(model, cfg.model)
    return model, prec


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
    if sharded(cfg):
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

    lockstep = sharded(cfg)  # sharded weights: the same calls on every rank
    return TransformersSampler(model, tokenizer, device=device, lockstep=lockstep)


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
