"""Parts the build step (``reasoner.build``) assembles: device, seeds, the policy, the reference, the problem stream."""
from __future__ import annotations

import copy
import random

import numpy as np
import torch

from reasoner import distributed, lora, precision, seeds, threads
from reasoner.config import ModelConfig
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


def sharded(parallel: str) -> bool:
    """FSDP2 shards the weights (run.parallel=fsdp under torchrun)."""
    return parallel == "fsdp" and distributed.env_info().world > 1


def prepare_policy(model, m: ModelConfig, n_threads: int, device: torch.device, is_sharded: bool = False):
    """Precision, threads (``run.threads``), gradient checkpointing and LoRA adapters as ``m`` says;
    returns (the policy to train, its resolved precision.Precision)."""
    prec = precision.resolve(m.precision, device, threads.n_params(model), is_sharded)
    model.to(prec.compute)
    threads.configure(model, n_threads)
    if m.gradient_checkpointing:
        if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    if lora.enabled(m):
        model = lora.wrap(model, m)
    return model, prec


def make_reference(policy, beta: float, is_sharded: bool = False):
    """A frozen copy of the starting policy, or None when beta == 0 (no memory, no passes).

    With LoRA the reference is the policy itself with its adapters disabled (no copy).
    """
    if beta == 0:
        return None
    if lora.is_peft(policy):
        return lora.AdapterOffReference(policy)
    ref = copy.deepcopy(policy).eval()
    ref.requires_grad_(False)
    if is_sharded:
        distributed.fsdp_shard(ref)  # sharded like the policy: no full copy per rank
    return ref


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
            g = seeds.epoch_order(self.seed, epoch)
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
