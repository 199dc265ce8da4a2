"""Group sampling: prompts in, a ``Rollout`` of N = len(prompts) * n completions out.

One Protocol, two backends: ``transformers`` (CPU/GPU) and ``vllm`` (GPU). Both return
the sampled tokens' log-probs under the sampling distribution and a truncation flag.
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


class Sampler(Protocol):
    def generate(self, prompts: list[str], params: SamplingParams) -> Rollout:
        """Sample params.n completions per prompt; rows are group-major."""
        ...

    def sync_weights(self, model: torch.nn.Module) -> None:
        """Make the next generate() use the model's current weights."""
        ...
