"""Records passed between the stages: problems -> sampler -> verifiers -> advantages -> loss.

Shape letters (defined once, used everywhere): ``B`` problems per step, ``G`` group size,
``N = B*G`` completions, ``P`` prompt tokens (left padded), ``T`` completion tokens
(right padded).
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Callable, Mapping, NamedTuple, Sequence, TypeVar

import torch

R = TypeVar("R")


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


def _padded(side: str | None = None, fill: object = 0):
    """A field of a record: ``side`` is where rows are padded when records of different widths are
    joined ("left", "right", or None for a field without a width)."""
    return field(metadata={"pad": side, "fill": fill})


@dataclass
class Rollout:
    """N = B*G sampled completions, group-major: rows i*G .. i*G+G-1 belong to problem i."""

    prompt_ids: torch.Tensor = _padded("left")  # [N, P] long, left padded with pad_token_id
    prompt_mask: torch.Tensor = _padded("left", False)  # [N, P] bool, True on real prompt tokens
    completion_ids: torch.Tensor = _padded("right")  # [N, T] long, right padded
    completion_mask: torch.Tensor = _padded("right", False)  # [N, T] bool, True on sampled tokens (EOS included)
    logp: torch.Tensor = _padded("right", 0.0)  # [N, T] float32, log-prob of each sampled token under the sampler
    truncated: torch.Tensor = _padded()  # [N] bool, True when max_new_tokens was hit before EOS
    texts: list[str] = _padded()  # N decoded completions (special tokens removed)

    @property
    def lengths(self) -> torch.Tensor:  # [N] long, completion tokens per row
        return self.completion_mask.sum(-1)

    def rows(self, idx: Sequence[int] | torch.Tensor) -> "Rollout":
        return take_rows(self, idx)

    def map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> "Rollout":
        return map_tensors(self, fn)


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


# ---- generic operations over a record's fields: tensors [N, ...] and lists of N items alike ----

def take_rows(rec: R, idx: Sequence[int] | torch.Tensor) -> R:
    """The record of rows ``idx`` (in that order) of every field."""
    ix = torch.as_tensor(idx, dtype=torch.long)
    pick = lambda v: v[ix] if isinstance(v, torch.Tensor) else [v[i] for i in ix.tolist()]  # noqa: E731
    return type(rec)(*(pick(getattr(rec, f.name)) for f in fields(rec)))


def map_tensors(rec: R, fn: Callable[[torch.Tensor], torch.Tensor]) -> R:
    """``fn`` applied to every tensor field (lists are kept)."""
    return type(rec)(*(fn(v) if isinstance(v, torch.Tensor) else v for v in (getattr(rec, f.name) for f in fields(rec))))


def cat_records(recs: Sequence[R], fill: Mapping[str, object] | None = None) -> R:
    """Join records row-wise; a field with a pad side is padded to the widest first (with its
    ``fill``, or ``fill[name]``): the filler never matters, every padded position is masked out."""
    if len(recs) == 1:
        return recs[0]
    out = []
    for f in fields(recs[0]):
        vals = [getattr(r, f.name) for r in recs]
        side = f.metadata.get("pad")
        if not isinstance(vals[0], torch.Tensor):
            out.append([x for v in vals for x in v])
            continue
        if side is not None:
            width, value = max(v.shape[1] for v in vals), (fill or {}).get(f.name, f.metadata["fill"])
            vals = [_pad(v, width, value, side == "left") for v in vals]
        out.append(torch.cat(vals))
    return type(recs[0])(*out)


def cat_rollouts(rolls: list[Rollout], pad_id: int = 0) -> Rollout:
    """Join rollouts row-wise, re-padding prompts on the left and completions on the right
    (``pad_id`` keeps decoded ids tidy)."""
    return cat_records(rolls, {"prompt_ids": pad_id, "completion_ids": pad_id})
