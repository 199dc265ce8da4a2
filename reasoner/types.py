"""Records passed between the stages: problems -> sampler -> verifiers -> advantages -> loss.

Shape letters (defined once, used everywhere): ``B`` problems per step, ``G`` group size,
``N = B*G`` completions, ``P`` prompt tokens (left padded), ``T`` completion tokens
(right padded).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch


@dataclass(frozen=True)
class Problem:
    """One problem: what to ask, how to check the answer."""

    id: str
    prompt: str | list[dict[str, str]]  # plain text, or chat messages [{"role", "content"}]
    answer: str | None = None  # gold answer (math verifiers)
    tests: dict[str, Any] | None = None  # unit tests (code verifiers), format-specific
    verifier: str = "math"  # name in the verifier registry
    source: str = ""  # dataset name or file the problem came from
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


@dataclass
class Rollout:
    """N = B*G sampled completions, group-major: rows i*G .. i*G+G-1 belong to problem i."""

    prompt_ids: torch.Tensor  # [N, P] long, left padded with pad_token_id
    prompt_mask: torch.Tensor  # [N, P] bool, True on real prompt tokens
    completion_ids: torch.Tensor  # [N, T] long, right padded
    completion_mask: torch.Tensor  # [N, T] bool, True on sampled tokens (EOS included)
    logp: torch.Tensor  # [N, T] float32, log-prob of each sampled token under the sampler
    truncated: torch.Tensor  # [N] bool, True when max_new_tokens was hit before EOS
    texts: list[str]  # N decoded completions (special tokens removed)

    @property
    def lengths(self) -> torch.Tensor:  # [N] long, completion tokens per row
        return self.completion_mask.sum(-1)


class LossOut(NamedTuple):
    """The scalar to backprop plus detached diagnostics."""

    loss: torch.Tensor  # [] scalar, differentiable
    stats: dict[str, float]  # e.g. {"loss/policy": ..., "loss/kl": ..., "loss/clip_frac": ...}


def _pad(x: torch.Tensor, width: int, value, left: bool) -> torch.Tensor:
    extra = width - x.shape[1]
    if extra == 0:
        return x
    pad = torch.full((x.shape[0], extra), value, dtype=x.dtype, device=x.device)
    return torch.cat([pad, x] if left else [x, pad], 1)


def cat_rollouts(rolls: list[Rollout], pad_id: int = 0) -> Rollout:
    """Join rollouts row-wise, re-padding prompts on the left and completions on the right.

    The filler id never matters (every padded position is masked out); ``pad_id`` keeps
    decoded ids tidy.
    """
    if len(rolls) == 1:
        return rolls[0]
    P = max(r.prompt_ids.shape[1] for r in rolls)
    T = max(r.completion_ids.shape[1] for r in rolls)

    def cat(f: str, w: int, v, left: bool) -> torch.Tensor:
        return torch.cat([_pad(getattr(r, f), w, v, left) for r in rolls])

    return Rollout(prompt_ids=cat("prompt_ids", P, pad_id, True), prompt_mask=cat("prompt_mask", P, False, True),
                   completion_ids=cat("completion_ids", T, pad_id, False),
                   completion_mask=cat("completion_mask", T, False, False), logp=cat("logp", T, 0.0, False),
                   truncated=torch.cat([r.truncated for r in rolls]), texts=[t for r in rolls for t in r.texts])
