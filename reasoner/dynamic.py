"""Collecting one step's scored groups, with DAPO's dynamic sampling (Yu et al. 2025).

``collect`` replaces steps (a)-(c) of the loop: take B problems, sample G completions each,
score them and shape the rewards (``reasoner.rewards``). With ``algo.dynamic_sampling`` a group
whose verifier scores are all equal (all right or all wrong: it teaches nothing) is dropped and
more problems are drawn until B informative groups are kept, at most ``algo.max_sampling_tries``
draws. If the cap is hit first, the batch is filled with dropped groups (so its shape never
changes) and ``dynamic/filled_groups`` says how many.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any, Callable

import torch
from torch import Tensor

import verifiers
from reasoner import rewards as R
from reasoner.types import Problem, Rollout, cat_rollouts

@dataclass
class Scored:
    """B problems with their G completions each, scored; rows are group-major (see types.py)."""

    problems: list[Problem]  # [B]
    prompts: list[str]  # [B]
    roll: Rollout  # N = B*G completions
    verdicts: list  # [N] verifiers.Verdict
    scores: Tensor  # [N] verifier scores
    rewards: Tensor  # [N] scores + weighted extra rewards + overlong punishment
    parts: dict[str, Tensor]  # {name: [N]} each extra reward, unweighted


def informative(rewards: Tensor, atol: float = 1e-8) -> Tensor:
    """[B, G] rewards -> [B] bool, True where the group's rewards are not all equal."""
    if rewards.dim() != 2:
        raise ValueError(f"rewards must be [B, G], got shape {tuple(rewards.shape)}")
    return (rewards.amax(dim=1) - rewards.amin(dim=1)) > atol


def take_groups(s: Scored, groups: list[int], G: int) -> Scored:
    """The sub-batch of the given group (problem) indices, rows still group-major."""
    rows = [g * G + j for g in groups for j in range(G)]
    idx = torch.tensor(rows, dtype=torch.long)
    r = s.roll
    roll = Rollout(r.prompt_ids[idx], r.prompt_mask[idx], r.completion_ids[idx], r.completion_mask[idx],
                   r.logp[idx], r.truncated[idx], [r.texts[i] for i in rows])
    return Scored([s.problems[g] for g in groups], [s.prompts[g] for g in groups], roll,
                  [s.verdicts[i] for i in rows], s.scores[idx], s.rewards[idx], {k: v[idx] for k, v in s.parts.items()})


def cat_scored(parts: list[Scored]) -> Scored:
    if len(parts) == 1:
        return parts[0]
    return Scored([p for s in parts for p in s.problems], [p for s in parts for p in s.prompts],
                  cat_rollouts([s.roll for s in parts]), [v for s in parts for v in s.verdicts],
                  torch.cat([s.scores for s in parts]), torch.cat([s.rewards for s in parts]),
                  {k: torch.cat([s.parts[k] for s in parts]) for k in parts[0].parts})


def sample_and_score(problems: list[Problem], render: Callable[[Problem], Any], sampler, params, cfg,
                     timings: dict[str, float]) -> Scored:
    """Render, sample params.n completions per problem, score, shape rewards; add to timings."""
    G = params.n
    prompts = [render(p) for p in problems]
    t0 = time.perf_counter()
    roll = sampler.generate(prompts, params)
    t1 = time.perf_counter()
    flat = [p for p in problems for _ in range(G)]
    verdicts = verifiers.score_all(roll.texts, flat)
    scores = torch.tensor([v.score for v in verdicts], dtype=torch.float32)
    rewards, parts = R.shape_rewards(scores, roll.texts, flat, roll.lengths, cfg.algo, params.max_new_tokens)
    t2 = time.perf_counter()
    timings["generate"] = timings.get("generate", 0.0) + t1 - t0
    timings["verify"] = timings.get("verify", 0.0) + t2 - t1
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


def collect(stream, step: int, render, sampler, params, cfg, timings: dict[str, float]
            ) -> tuple[Scored, dict[str, float]]:
    """Steps (a)-(c) of the loop: one Scored batch of B groups and its reward/dynamic metrics.

    Try k > 0 of dynamic sampling draws the problems of stream position ``step + k * run.steps``
    (beyond the run's own horizon, so no problem of a later step is consumed early) with its
    own sampling seed; everything stays deterministic and resumable.
    """
    G, B = params.n, cfg.run.batch_size

    def draw(k: int) -> Scored:
        p = params if k == 0 else replace(params, seed=None if params.seed is None else params.seed + 7919 * k)
        return sample_and_score(stream.batch(step + k * cfg.run.steps), render, sampler, p, cfg, timings)

    if not cfg.algo.dynamic_sampling:
        s, stats = draw(0), {}
    else:
        s, stats = fill_batch(draw, B, G, cfg.algo.max_sampling_tries)
    return s, {**R.reward_metrics(s.rewards, s.parts), **stats}
