"""Collecting one step's scored groups, with DAPO's dynamic sampling (Yu et al. 2025).

``collect`` replaces steps (a)-(c) of the loop: take B problems, sample G completions each,
score them and shape the rewards (``reasoner.rewards``). With ``algo.dynamic_sampling`` a group
whose verifier scores are all equal (all right or all wrong: it teaches nothing) is dropped and
more problems are drawn until B informative groups are kept, at most ``algo.max_sampling_tries``
draws. If the cap is hit first, the batch is filled with dropped groups (so its shape never
changes) and ``dynamic/filled_groups`` says how many.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any, Callable

import torch
from torch import Tensor

from reasoner import verifiers
from reasoner import rewards as R
from reasoner import seeds
from reasoner.types import Problem, Rollout, cat_rollouts


def _per(unit: str):
    return field(metadata={"per": unit})


@dataclass
class Scored:
    """B problems with their G completions each, scored; rows are group-major (see types.py)."""

    problems: list[Problem] = _per("group")  # [B]
    prompts: list[str] = _per("group")  # [B]
    roll: Rollout = _per("row")  # N = B*G completions
    verdicts: list = _per("row")  # [N] verifiers.Verdict
    scores: Tensor = _per("row")  # [N] verifier scores
    rewards: Tensor = _per("row")  # [N] scores + weighted extra rewards + overlong punishment
    parts: dict[str, Tensor] = _per("row")  # {name: [N]} each extra reward, unweighted


def _take(v: Any, idx: list[int]) -> Any:
    if isinstance(v, Rollout):
        return v.rows(idx)
    if isinstance(v, dict):
        return {k: _take(x, idx) for k, x in v.items()}
    return v[torch.tensor(idx, dtype=torch.long)] if isinstance(v, Tensor) else [v[i] for i in idx]


def _cat(vs: list[Any]) -> Any:
    if isinstance(vs[0], Rollout):
        return cat_rollouts(vs)
    if isinstance(vs[0], dict):
        return {k: _cat([v[k] for v in vs]) for k in vs[0]}
    return torch.cat(vs) if isinstance(vs[0], Tensor) else [x for v in vs for x in v]


def informative(rewards: Tensor, atol: float = 1e-8) -> Tensor:
    """[B, G] rewards -> [B] bool, True where the group's rewards are not all equal."""
    if rewards.dim() != 2:
        raise ValueError(f"rewards must be [B, G], got shape {tuple(rewards.shape)}")
    return (rewards.amax(dim=1) - rewards.amin(dim=1)) > atol


def take_groups(s: Scored, groups: list[int], G: int) -> Scored:
    """The sub-batch of the given group (problem) indices, rows still group-major."""
    idx = {"group": groups, "row": [g * G + j for g in groups for j in range(G)]}
    return Scored(*(_take(getattr(s, f.name), idx[f.metadata["per"]]) for f in fields(s)))


def cat_scored(parts: list[Scored]) -> Scored:
    if len(parts) == 1:
        return parts[0]
    return Scored(*(_cat([getattr(p, f.name) for p in parts]) for f in fields(parts[0])))


def sample_and_score(problems: list[Problem], render: Callable[[Problem], Any], sampler, params, shaping,
                     timer) -> Scored:
    """Render, sample params.n completions per problem, score, shape rewards (``shaping``: the
    ``algo`` section, see ``rewards.shape_rewards``); time "generate" and "verify" on ``timer``."""
    G = params.n
    prompts = [render(p) for p in problems]
    with timer("generate"):
        roll = sampler.generate(prompts, params)
    with timer("verify"):
        flat = [p for p in problems for _ in range(G)]
        verdicts = verifiers.score_all(roll.texts, flat)
        scores = torch.tensor([v.score for v in verdicts], dtype=torch.float32)
        rewards, parts = R.shape_rewards(scores, roll.texts, flat, roll.lengths, shaping, params.max_new_tokens)
    return Scored(problems, prompts, roll, verdicts, scores, rewards, parts)


def fill_batch(draw: Callable[[int], Scored], B: int, G: int, max_tries: int) -> tuple[Scored, dict[str, float]]:
    """Call ``draw(k)`` (k = 0, 1, ...) until B informative groups are kept or ``max_tries`` draws.

    A group is informative when its verifier scores are not all equal (DAPO keeps prompts with
    0 < accuracy < 1; shaping terms such as the overlong punishment do not count). Returns
    exactly B groups: the first B informative ones in draw order, then, if too few, dropped
    ones in draw order. Metrics: groups drawn, kept (informative), filled, tries.
    """
    if B < 1 or G < 1 or max_tries < 1:
        raise ValueError(f"need B, G, max_tries >= 1, got {B}, {G}, {max_tries}")
    kept: list[Scored] = []
    dropped: list[Scored] = []
    n_kept = n_drawn = tries = 0
    while n_kept < B and tries < max_tries:
        s = draw(tries)
        tries += 1
        n_drawn += len(s.problems)
        ok = informative(s.scores.view(-1, G)).tolist()
        good = [g for g, k in enumerate(ok) if k][: B - n_kept]
        bad = [g for g, k in enumerate(ok) if not k]
        if good:
            kept.append(take_groups(s, good, G))
            n_kept += len(good)
        if bad:
            dropped.append(take_groups(s, bad, G))
    filled = B - n_kept
    if filled:
        pool = cat_scored(dropped)
        kept.append(take_groups(pool, list(range(filled)), G))
    stats = {"dynamic/drawn_groups": float(n_drawn), "dynamic/kept_groups": float(n_kept),
             "dynamic/filled_groups": float(filled), "dynamic/tries": float(tries)}
    return cat_scored(kept), stats


@dataclass
class Collector:
    """Steps (a)-(c) of the loop, built once: ``collect(step, params, timer)`` gives one Scored
    batch of B groups and its reward/dynamic metrics.

    Try k > 0 of dynamic sampling draws the problems of stream position ``step + k * horizon``
    (beyond the run's own ``run.steps``, so no problem of a later step is consumed early) with its
    own sampling seed; everything stays deterministic and resumable.
    """

    stream: Any  # runtime.ProblemStream
    render: Callable[[Problem], Any]
    sampler: Any
    shaping: Any  # the algo section (rewards.shape_rewards)
    batch_size: int  # B
    horizon: int  # run.steps
    max_tries: int = 0  # algo.max_sampling_tries with algo.dynamic_sampling; 0 = off

    def __call__(self, step: int, params, timer) -> tuple[Scored, dict[str, float]]:
        def draw(k: int) -> Scored:
            problems = self.stream.batch(step + k * self.horizon)
            p = replace(params, seed=seeds.retry(params.seed, k)) if k else params
            return sample_and_score(problems, self.render, self.sampler, p, self.shaping, timer)

        if self.max_tries:
            s, stats = fill_batch(draw, self.batch_size, params.n, self.max_tries)
        else:
            s, stats = draw(0), {}
        return s, {**R.reward_metrics(s.rewards, s.parts), **stats}
