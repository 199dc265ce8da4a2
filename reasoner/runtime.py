"""Parts the build step (``reasoner.build``) assembles: device, seeds, the policy, the reference, the problem stream."""
from __future__ import annotations

import copy
import functools
import random
from typing import Callable

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
    returns (the policy to train, its resolved precision.Precision, the float32 weights as loaded that
    bf16-mixed's masters start from: ``precision.loaded_float32``)."""
    prec = precision.resolve(m.precision, device, threads.n_params(model), is_sharded)
    # before the cast; LoRA trains only adapters made after it, so it keeps no float32 copy of the base
    start = {} if lora.enabled(m) else precision.loaded_float32(model, prec)
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
    return model, prec, start


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


class EpochOrder:
    """Position k of an endless run of shuffled passes over ``n`` items: pass e is the permutation
    drawn with ``generator(e)``; the latest pass is cached."""

    def __init__(self, n: int, generator: Callable[[int], torch.Generator]):
        self.n, self.generator = n, generator
        self._perms: dict[int, list[int]] = {}

    def __getitem__(self, k: int) -> int:
        epoch = k // self.n
        if epoch not in self._perms:
            self._perms = {epoch: torch.randperm(self.n, generator=self.generator(epoch)).tolist()}
        return self._perms[epoch][k % self.n]


class _Shards:
    """``batch(step)``: this rank's contiguous ``batch_size / world`` problems of ``global_batch(step)``."""

    batch_size: int
    rank: int
    world: int

    def global_batch(self, step: int) -> list[Problem]:
        raise NotImplementedError

    def batch(self, step: int) -> list[Problem]:
        """This rank's share of the step's global batch (all of it in one process)."""
        per = self.batch_size // self.world
        return self.global_batch(step)[self.rank * per:(self.rank + 1) * per]


def _check(problems: list, batch_size: int, world: int) -> None:
    if not problems:
        raise ValueError("the training set is empty")
    if batch_size % world:
        raise ValueError(f"batch_size={batch_size} is not divisible by the world size {world}")


class ProblemStream(_Shards):
    """Deterministic batches: epoch e is a permutation seeded by (seed, e); the cursor is the step.

    ``batch_size`` is the global batch; under torchrun rank r of W gets its contiguous
    ``batch_size / W`` problems of it (``batch(step)``), so groups stay whole on one rank.
    """

    def __init__(self, problems: list[Problem], batch_size: int, seed: int, rank: int = 0, world: int = 1):
        _check(problems, batch_size, world)
        self.problems, self.batch_size, self.seed = problems, batch_size, seed
        self.rank, self.world = rank, world
        self.order = EpochOrder(len(problems), functools.partial(seeds.epoch_order, seed))

    def global_batch(self, step: int) -> list[Problem]:
        return [self.problems[self.order[k]] for k in range(step * self.batch_size, (step + 1) * self.batch_size)]


class MixedStream(_Shards):
    """Batches drawn by weight from several sources (``data.train`` with several; ``reasoner.data.mixture``).

    Each problem of step t's global batch comes from source s with probability p_s = w_s / sum(w),
    drawn by systematic sampling with ``seeds.mixture(seed, t)``: the B points (u + j) / B of [0, 1)
    (one u ~ U[0, 1) per step) fall into the sources' shares, then go to random slots. Each slot's
    source has exactly the weights' law, and source s gets floor(p_s B) or ceil(p_s B) problems in
    every step, so over T steps its share strays from p_s by far less than independent draws would
    (variance f(1-f)/(B^2 T), f = frac(p_s B), instead of p_s(1-p_s)/(B T)). The n-th draw of s is
    position n of s's own shuffled passes (``seeds.source_order``). Everything is a function of the
    step: a resumed run (or dynamic sampling's later positions) gets the same batches; the draws per
    source before each step are counted once and cached.
    """

    def __init__(self, problems: list[Problem], weights: dict[str, float], batch_size: int, seed: int,
                 rank: int = 0, world: int = 1):
        _check(problems, batch_size, world)
        self.batch_size, self.seed, self.rank, self.world = batch_size, seed, rank, world
        self.names = list(weights)
        self.parts = [[p for p in problems if p.source == name] for name in self.names]
        for name, part in zip(self.names, self.parts):
            if not part:
                raise ValueError(f"no training problem has source {name!r}")
        self.orders = [EpochOrder(len(part), functools.partial(seeds.source_order, seed, i))
                       for i, part in enumerate(self.parts)]
        w = torch.tensor([weights[n] for n in self.names], dtype=torch.float64)
        self._edges = (w.cumsum(0) / w.sum())[:-1]  # [S-1] upper edges of each source's share of [0, 1)
        self._before: list[list[int]] = [[0] * len(self.names)]  # [t][s]: draws of source s in steps < t

    def choices(self, step: int) -> list[int]:
        """The source of each of the step's ``batch_size`` problems."""
        g, B = seeds.mixture(self.seed, step), self.batch_size
        points = (torch.rand(1, generator=g, dtype=torch.float64) + torch.arange(B, dtype=torch.float64)) / B  # [B]
        picks = torch.searchsorted(self._edges, points, right=True)  # [B] source index of each point
        return picks[torch.randperm(B, generator=g)].tolist()

    def _drawn_before(self, step: int) -> list[int]:
        while len(self._before) <= step:
            counts = list(self._before[-1])
            for s in self.choices(len(self._before) - 1):
                counts[s] += 1
            self._before.append(counts)
        return self._before[step]

    def global_batch(self, step: int) -> list[Problem]:
        cursor, out = list(self._drawn_before(step)), []
        for s in self.choices(step):
            out.append(self.parts[s][self.orders[s][cursor[s]]])
            cursor[s] += 1
        return out


def problem_stream(problems: list[Problem], weights: dict[str, float], batch_size: int, seed: int,
                   rank: int = 0, world: int = 1) -> _Shards:
    """The run's stream: one source (``weights`` has one entry or none) keeps ``ProblemStream``'s order;
    several are mixed by weight (``MixedStream``)."""
    if len(weights) <= 1:
        return ProblemStream(problems, batch_size, seed, rank, world)
    return MixedStream(problems, weights, batch_size, seed, rank, world)
