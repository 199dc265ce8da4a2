"""Dynamic sampling: uniform groups are dropped and refilled up to a cap; rollouts re-padded."""
from __future__ import annotations

import json

import pytest
import torch

from reasoner.config import load_config
from reasoner.dynamic import Scored, cat_rollouts, fill_batch, informative, take_groups
from reasoner.types import Problem, Rollout

G = 2


def _roll(n: int, P: int, T: int, tag: str) -> Rollout:
    """n rows, prompts of P tokens (left padded by one on row 0), completions of T tokens."""
    pmask = torch.ones(n, P, dtype=torch.bool)
    pmask[0, 0] = False
    return Rollout(prompt_ids=torch.arange(n * P).view(n, P) + 1, prompt_mask=pmask,
                   completion_ids=torch.full((n, T), 7), completion_mask=torch.ones(n, T, dtype=torch.bool),
                   logp=torch.full((n, T), -0.5), truncated=torch.zeros(n, dtype=torch.bool),
                   texts=[f"{tag}{i}" for i in range(n)])


def _scored(scores: list[list[float]], tag: str, P: int = 3, T: int = 2) -> Scored:
    """One draw: B groups of G scores; problems named tag+group index."""
    B = len(scores)
    s = torch.tensor(scores).view(-1)
    probs = [Problem(id=f"{tag}{g}", prompt=f"{tag}{g}") for g in range(B)]
    return Scored(probs, [p.prompt for p in probs], _roll(B * G, P, T, tag), [None] * (B * G), s, s.clone(),
                  {"format": s * 0 + 1})


def test_informative_groups():
    r = torch.tensor([[1.0, 1.0, 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0], [0.5, 0.5, 0.25]])
    assert informative(r).tolist() == [False, True, False, True]
    with pytest.raises(ValueError, match=r"\[B, G\]"):
        informative(torch.zeros(4))


def test_fill_batch_refills_dropped_groups():
    # B = 2. Draw 0: group a0 all right (dropped), a1 mixed (kept).
    #        Draw 1: group b0 all wrong (dropped), b1 mixed (kept) -> full after 2 tries, 4 drawn.
    draws = [_scored([[1, 1], [0, 1]], "a"), _scored([[0, 0], [1, 0]], "b", P=5, T=4)]
    calls = []

    def draw(k):
        calls.append(k)
        return draws[k]

    out, stats = fill_batch(draw, B=2, G=G, max_tries=5)
    assert calls == [0, 1]
    assert [p.id for p in out.problems] == ["a1", "b1"]
    assert out.roll.texts == ["a2", "a3", "b2", "b3"]  # rows follow their groups
    assert out.scores.tolist() == [0.0, 1.0, 1.0, 0.0]
    assert out.roll.completion_ids.shape == (4, 4) and out.parts["format"].shape == (4,)
    assert stats == {"dynamic/drawn_groups": 4.0, "dynamic/kept_groups": 2.0, "dynamic/filled_groups": 0.0,
                     "dynamic/tries": 2.0}


def test_fill_batch_stops_at_the_cap_and_fills_with_dropped_groups():
    # B = 3, max_tries 2: draw 0 keeps a1 only, draw 1 keeps nothing -> 1 kept, 2 filled from the
    # dropped groups in draw order (a0, a2); the batch keeps its shape B*G = 6.
    draws = [_scored([[1, 1], [0, 1], [0, 0]], "a"), _scored([[1, 1], [1, 1], [0, 0]], "b")]
    out, stats = fill_batch(lambda k: draws[k], B=3, G=G, max_tries=2)
    assert [p.id for p in out.problems] == ["a1", "a0", "a2"]
    assert out.roll.prompt_ids.shape[0] == 6 and len(out.verdicts) == 6
    assert stats["dynamic/kept_groups"] == 1.0 and stats["dynamic/filled_groups"] == 2.0
    assert stats["dynamic/drawn_groups"] == 6.0 and stats["dynamic/tries"] == 2.0


def test_fill_batch_takes_only_what_it_needs():
    # all 3 groups of draw 0 are informative but B = 2: one draw, the first two groups
    out, stats = fill_batch(lambda k: _scored([[0, 1], [1, 0], [0, 1]], "a"), B=2, G=G, max_tries=3)
    assert [p.id for p in out.problems] == ["a0", "a1"] and stats["dynamic/tries"] == 1.0
    with pytest.raises(ValueError, match="max_tries"):
        fill_batch(lambda k: _scored([[0, 1]], "a"), B=1, G=G, max_tries=0)


def test_cat_rollouts_repads_left_and_right():
    a, b = _roll(2, 3, 2, "a"), _roll(2, 5, 4, "b")
    c = cat_rollouts([a, b])
    assert c.prompt_ids.shape == (4, 5) and c.completion_ids.shape == (4, 4)
    # prompts padded on the left: row 0 of a had 2 real tokens, now 2 pad + 1 pad + 2 real
    assert c.prompt_mask[0].tolist() == [False, False, False, True, True]
    assert torch.equal(c.prompt_ids[1, 2:], a.prompt_ids[1])
    # completions padded on the right, with mask False and logp 0
    assert c.completion_mask[0].tolist() == [True, True, False, False]
    assert c.logp[0].tolist() == [-0.5, -0.5, 0.0, 0.0]
    assert c.lengths.tolist() == [2, 2, 4, 4] and c.texts == ["a0", "a1", "b0", "b1"]


def test_take_groups_keeps_rows_of_each_group():
    s = _scored([[0, 1], [1, 1], [0, 0]], "a")
    sub = take_groups(s, [2, 0], G)
    assert [p.id for p in sub.problems] == ["a2", "a0"]
    assert sub.scores.tolist() == [0.0, 0.0, 0.0, 1.0] and sub.roll.texts == ["a4", "a5", "a0", "a1"]


def test_dynamic_metrics_reach_metrics_jsonl(tiny_model_dir, tmp_path):
    from reasoner.trainer import train

    cfg = load_config(None, [f"model.name={tiny_model_dir}", f"run.out_dir={tmp_path}", "run.progress=false",
                             "run.steps=2", "data.eval_size=4", "run.batch_size=2", "sampling.group_size=2",
                             "sampling.max_new_tokens=4", "run.threads=1", "data.synthetic_size=64",
                             "algo.dynamic_sampling=true", "algo.max_sampling_tries=2", "run.log_samples_every=0"])
    train(cfg)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    for row in rows[1:]:
        assert 2 <= row["dynamic/drawn_groups"] <= 4 and 1 <= row["dynamic/tries"] <= 2
        assert row["dynamic/kept_groups"] + row["dynamic/filled_groups"] == 2
        # kept groups are exactly the informative ones: the batch's zero-std share matches
        assert row["frac_zero_std_groups"] == pytest.approx(row["dynamic/filled_groups"] / 2)


class _FakeStream:
    def __init__(self, answers: list[str], B: int):
        self.problems = [Problem(id=f"p{i}", prompt=f"q{i}=", answer=a, source="synthetic")
                         for i, a in enumerate(answers)]
        self.B, self.asked = B, []

    def batch(self, step: int) -> list[Problem]:
        self.asked.append(step)
        return [self.problems[(step * self.B + i) % len(self.problems)] for i in range(self.B)]


class _FakeSampler:
    """Completion j of every group is str(j + 1): a problem with answer "1" or "2" gets mixed scores."""

    def __init__(self):
        self.seeds = []

    def generate(self, prompts, params):
        self.seeds.append(params.seed)
        n = len(prompts) * params.n
        r = _roll(n, 2, 2, "x")
        r.texts = [str(j % params.n + 1) for j in range(n)]
        return r


def test_collect_draws_later_stream_positions_with_new_seeds():
    from reasoner.dynamic import Collector
    from reasoner.metrics import Timer
    from reasoner.sampler import SamplingParams

    # B = 2, run.steps = 10. Step 3 draws stream batch 3 (answers "7", "1": one informative group),
    # then batch 3 + 10 = 13 (answers "2", "9") -> kept p7 (answer "1") and p26 (answer "2").
    answers = ["7" if i % 2 == 0 else "1" for i in range(26)] + ["2", "9"] + ["9"] * 4
    stream, sampler = _FakeStream(answers, B=2), _FakeSampler()
    cfg = load_config(None, ["run.batch_size=2", "run.steps=10", "sampling.group_size=2",
                             "algo.dynamic_sampling=true", "algo.max_sampling_tries=4",
                             "algo.reward_weights={format: 0.5}"])
    params = SamplingParams(n=2, max_new_tokens=2, seed=100)
    t = Timer()
    collect = Collector(stream, lambda p: p.prompt, sampler, cfg.algo, batch_size=2, horizon=10, max_tries=4)
    s, metrics = collect(3, params, t)
    assert stream.asked == [3, 13] and sampler.seeds == [100, 100 + 7919]
    assert [p.id for p in s.problems] == ["p7", "p26"]
    assert s.scores.tolist() == [1.0, 0.0, 0.0, 1.0]
    # every completion is a bare number: format 1, weight 0.5 -> rewards = scores + 0.5
    assert s.rewards.tolist() == [1.5, 0.5, 0.5, 1.5]
    assert metrics["reward/format"] == 1.0 and metrics["reward/total"] == 1.0
    assert metrics["dynamic/drawn_groups"] == 4 and metrics["dynamic/kept_groups"] == 2
    assert set(t.seconds) == {"generate", "verify"}
    # without dynamic sampling: one draw, the step's own problems, no dynamic/* metrics
    stream, sampler = _FakeStream(answers, B=2), _FakeSampler()
    collect = Collector(stream, lambda p: p.prompt, sampler, load_config(None, ["run.batch_size=2"]).algo, 2, 1000)
    s, metrics = collect(3, params, Timer())
    assert stream.asked == [3] and [p.id for p in s.problems] == ["p6", "p7"]
    assert not any(k.startswith("dynamic/") for k in metrics) and metrics["reward/total"] == 0.25
