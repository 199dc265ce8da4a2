"""Reward shaping: extra reward functions with weights, DAPO's overlong handling. PURE functions.

The verifier's score (``verifiers.score_all``) is the task reward, weight 1. On top of it:

- ``REWARDS``: extra reward functions ``fn(completion: str, problem) -> float`` by name,
  combined with the weights of ``algo.reward_weights`` ({name: weight}) and logged one by
  one as ``reward/<name>`` (the unweighted mean). Register your own with
  ``@REWARDS.register("name")``; a function with a ``batch(texts, problems) -> list[float]``
  attribute is called once for the step's completions (``reward_model``: a learned scorer,
  ``reasoner.reward_model``).
- ``algo.overlong == "soft"``: DAPO's soft overlong punishment added to the reward
  (``soft_overlong_penalty``, logged as ``reward/overlong``).
- ``algo.overlong == "mask"``: truncated completions get zero loss weight
  (``overlong_loss_mask``, applied by ``reasoner.update``).
"""
from __future__ import annotations

import re
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import Tensor

from reasoner.registry import Registry

RewardFn = Callable[[str, Any], float]
REWARDS: Registry[RewardFn] = Registry("reward function")
RESERVED = ("mean", "std", "total", "overlong")  # reward/<name> keys the trainer logs itself
LENGTH_SCALE_CHARS = 1000  # the `length` reward is -len(completion) / this, floored at -1


# --- DAPO overlong handling ---------------------------------------------------------------


def soft_overlong_penalty(lengths: Tensor, max_len: int, buffer: int, penalty: float = 1.0) -> Tensor:
    """DAPO's soft overlong punishment (Yu et al. 2025, "DAPO", eq. 13), [N] lengths -> [N] rewards.

    With ``L_max = max_len`` and ``L_cache = buffer``::

        R(y) = 0                                  if |y| <= L_max - L_cache
             = ((L_max - L_cache) - |y|) / L_cache if L_max - L_cache < |y| <= L_max
             = -1                                 if |y| > L_max

    scaled by ``penalty`` (verl's ``overlong_penalty_factor``): a linear ramp from 0 to
    ``-penalty`` over the last ``buffer`` tokens before the limit.
    """
    if lengths.dim() != 1:
        raise ValueError(f"lengths must be a [N] tensor, got shape {tuple(lengths.shape)}")
    if not 0 < buffer <= max_len:
        raise ValueError(f"overlong buffer must be in 1..max_len={max_len}, got {buffer}")
    if penalty < 0:
        raise ValueError(f"overlong penalty must be >= 0, got {penalty}")
    exceed = lengths.float() - (max_len - buffer)
    return (-exceed / buffer * penalty).clamp(min=-penalty, max=0.0)


def overlong_loss_mask(completion_mask: Tensor, truncated: Tensor) -> Tensor:
    """[N, T] mask with the rows of truncated completions switched off (DAPO overlong filtering).

    A completion cut at ``max_new_tokens`` has no final answer; its reward says nothing about
    its tokens, so they get zero weight in the loss.
    """
    if completion_mask.dim() != 2 or truncated.shape != completion_mask.shape[:1]:
        raise ValueError(f"need completion_mask [N, T] and truncated [N], got {tuple(completion_mask.shape)}, "
                         f"{tuple(truncated.shape)}")
    return completion_mask.bool() & ~truncated.bool()[:, None]


# --- extra reward functions ---------------------------------------------------------------

_BARE = re.compile(r"-?\d+(?:/\d+)?")


@REWARDS.register("format")
def format_reward(completion: str, problem) -> float:
    """1.0 when the answer is in the form the problem's verifier expects, else 0.0.

    - built-in synthetic problems: the bare answer, an integer or a fraction ("82", "-5/6");
    - math problems: an explicit final answer, ``\\boxed{...}`` or "The answer is ...";
    - code problems: a fenced code block.
    """
    text = completion.strip()
    if getattr(problem, "source", "") == "synthetic":
        return float(_BARE.fullmatch(text) is not None)
    if getattr(problem, "verifier", "math") == "code":
        from reasoner.verifiers.code.extract import fenced_blocks

        return float(bool(fenced_blocks(completion)))
    from reasoner.verifiers.math.extract import extract_answer

    return float(extract_answer(completion, fallback="none") is not None)


@REWARDS.register("length")
def length_reward(completion: str, problem) -> float:
    """-len(completion) / LENGTH_SCALE_CHARS, floored at -1: a penalty on long answers."""
    return -min(len(completion) / LENGTH_SCALE_CHARS, 1.0)


def _load_builtins() -> None:
    """Register the built-in rewards that live in their own modules (``reward_model``)."""
    import reasoner.reward_model  # noqa: F401 - registers "reward_model"


def check_weights(weights: Mapping[str, float]) -> None:
    """Raise a clear error for an unknown reward name or a non-finite weight."""
    _load_builtins()
    for name, w in weights.items():
        if name in RESERVED:
            raise ValueError(f"reward name {name!r} is reserved for the trainer's own reward/{name} metric")
        REWARDS.get(name)  # KeyError naming the valid choices
        if not isinstance(w, (int, float)) or w != w or abs(w) == float("inf"):
            raise ValueError(f"algo.reward_weights[{name!r}] must be a finite number, got {w!r}")


def _scores(fn: RewardFn, texts: Sequence[str], problems: Sequence[Any]) -> Tensor:
    """[N] float32 scores of one reward function: its ``batch`` hook if it has one, else item by item."""
    batch = getattr(fn, "batch", None)
    if batch is not None:
        return torch.tensor([float(x) for x in batch(list(texts), list(problems))], dtype=torch.float32)
    return torch.tensor([float(fn(t, p)) for t, p in zip(texts, problems)], dtype=torch.float32)


def extra_rewards(texts: Sequence[str], problems: Sequence[Any], weights: Mapping[str, float]
                  ) -> tuple[Tensor, dict[str, Tensor]]:
    """Weighted sum of the named reward functions, [N], and each unweighted, {name: [N]}."""
    if len(texts) != len(problems):
        raise ValueError(f"{len(texts)} completions but {len(problems)} problems")
    check_weights(weights)
    parts = {name: _scores(REWARDS.get(name), texts, problems) for name in weights}
    total = torch.zeros(len(texts))
    for name, w in weights.items():
        total = total + w * parts[name]
    return total, parts


def shape_rewards(scores: Tensor, texts: Sequence[str], problems: Sequence[Any], lengths: Tensor, algo,
                  max_new_tokens: int) -> tuple[Tensor, dict[str, Tensor]]:
    """Task scores [N] + weighted extra rewards + soft overlong punishment -> (rewards [N], parts).

    ``parts`` holds each extra reward (unweighted) and, with ``algo.overlong == "soft"``, the
    punishment as ``overlong``; the trainer logs their means as ``reward/<name>``.
    """
    extra, parts = extra_rewards(texts, problems, algo.reward_weights)
    rewards = scores.float() + extra
    if algo.overlong == "soft":
        parts["overlong"] = soft_overlong_penalty(lengths, max_new_tokens, algo.overlong_buffer,
                                                  algo.overlong_penalty)
        rewards = rewards + parts["overlong"]
    return rewards, parts


def reward_metrics(rewards: Tensor, parts: Mapping[str, Tensor]) -> dict[str, float]:
    """{"reward/total": mean combined reward, "reward/<name>": mean of each part}."""
    return {"reward/total": float(rewards.mean()), **{f"reward/{k}": float(v.mean()) for k, v in parts.items()}}
