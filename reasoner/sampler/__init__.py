"""Group sampling: prompts in, a ``Rollout`` of N = len(prompts) * n completions out.

One Protocol, two backends: ``transformers`` (CPU/GPU) and ``vllm`` (GPU). Both return
the sampled tokens' log-probs under the distribution actually sampled (after temperature,
top_k, min_p and top_p, renormalised: ``reasoner.sampler.processing`` has the order) and a
truncation flag (False for a completion that ended with EOS or a stop string).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from reasoner.types import Rollout


@dataclass(frozen=True)
class SamplingParams:
    n: int = 1  # completions per prompt
    temperature: float = 1.0  # 0 = greedy
    top_p: float = 1.0
    max_new_tokens: int = 16
    seed: int | None = None
    top_k: int = 0  # keep the k most likely tokens; 0 = off
    min_p: float = 0.0  # keep tokens with probability >= min_p * the largest; 0 = off
    stop: tuple[str, ...] = ()  # a completion ends once its text contains one; its text stops before it

    def __post_init__(self):
        if not isinstance(self.stop, tuple):  # a list (from the config) or one string
            object.__setattr__(self, "stop", (self.stop,) if isinstance(self.stop, str) else tuple(self.stop))


class Sampler(Protocol):
    def generate(self, prompts: list[str], params: SamplingParams) -> Rollout:
        """Sample params.n completions per prompt; rows are group-major."""
        ...

    def sync_weights(self, model: torch.nn.Module) -> None:
        """Make the next generate() use the model's current weights."""
        ...
