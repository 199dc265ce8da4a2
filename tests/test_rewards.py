"""Reward shaping: DAPO soft overlong punishment, the overlong loss mask, weighted extra rewards."""
from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from reasoner.config import AlgoConfig, load_config
from reasoner.rewards import (REWARDS, extra_rewards, format_reward, length_reward, overlong_loss_mask,
                              reward_metrics, shape_rewards, soft_overlong_penalty)
from reasoner.types import Problem

SYN = Problem(id="s", prompt="47+35=", answer="82", source="synthetic")
MATH = Problem(id="m", prompt="What is 2+3?", answer="5", source="math500")
CODE = Problem(id="c", prompt="Write f.", tests={}, verifier="code", source="mbpp")


# --- soft overlong punishment ------------------------------------------------------------


def test_soft_overlong_hand_values():
    # L_max = 16, L_cache = 4 -> no penalty up to 16 - 4 = 12 tokens, then a ramp to -1 at 16:
    #   |y| = 10: 10 <= 12                      ->  0
    #   |y| = 12: 12 <= 12                      ->  0
    #   |y| = 13: (12 - 13) / 4 = -0.25
    #   |y| = 14: (12 - 14) / 4 = -0.5
    #   |y| = 16: (12 - 16) / 4 = -1
    #   |y| = 20: longer than L_max             -> -1 (the floor)
    lengths = torch.tensor([10, 12, 13, 14, 16, 20])
    got = soft_overlong_penalty(lengths, max_len=16, buffer=4, penalty=1.0)
    assert_close(got, torch.tensor([0.0, 0.0, -0.25, -0.5, -1.0, -1.0]))


def test_soft_overlong_penalty_factor_scales_the_ramp():
    # penalty 0.5 halves every value above: 13 -> -0.125, 14 -> -0.25, 16 -> -0.5, 20 -> -0.5 (floor -0.5)
    got = soft_overlong_penalty(torch.tensor([12, 13, 14, 16, 20]), max_len=16, buffer=4, penalty=0.5)
    assert_close(got, torch.tensor([0.0, -0.125, -0.25, -0.5, -0.5]))


def test_soft_overlong_buffer_one_is_a_step():
    # buffer 1: only |y| = L_max = 8 is punished, by (7 - 8) / 1 = -1
    got = soft_overlong_penalty(torch.tensor([6, 7, 8]), max_len=8, buffer=1)
    assert_close(got, torch.tensor([0.0, 0.0, -1.0]))


@pytest.mark.parametrize("kwargs, msg", [({"buffer": 0}, "buffer"), ({"buffer": 17}, "buffer"),
                                         ({"buffer": 4, "penalty": -1.0}, "penalty")])
def test_soft_overlong_bad_arguments(kwargs, msg):
    with pytest.raises(ValueError, match=msg):
        soft_overlong_penalty(torch.tensor([1, 2]), max_len=16, **kwargs)
    with pytest.raises(ValueError, match=r"\[N\]"):
        soft_overlong_penalty(torch.tensor([[1, 2]]), max_len=16, buffer=4)


# --- overlong mask ----------------------------------------------------------------------


def test_overlong_mask_switches_off_truncated_rows():
    cmask = torch.tensor([[1, 1, 0], [1, 1, 1], [1, 0, 0]], dtype=torch.bool)
    truncated = torch.tensor([False, True, False])
    # row 1 was cut at max_new_tokens: all its tokens leave the loss; rows 0 and 2 keep their mask
    expected = torch.tensor([[1, 1, 0], [0, 0, 0], [1, 0, 0]], dtype=torch.bool)
    assert torch.equal(overlong_loss_mask(cmask, truncated), expected)
    with pytest.raises(ValueError, match="truncated"):
        overlong_loss_mask(cmask, torch.tensor([True, False]))


@pytest.fixture(scope="module")
def tiny_model(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir)


def _toy_model_and_batch(tiny_model, truncated, adv):
    import copy

    from reasoner.types import Rollout
    from reasoner.update import UpdateBatch

    g = torch.Generator().manual_seed(0)  # the same tokens for every call
    N, P, T = 4, 3, 3
    roll = Rollout(prompt_ids=torch.randint(3, 20, (N, P), generator=g), prompt_mask=torch.ones(N, P, dtype=torch.bool),
                   completion_ids=torch.randint(3, 20, (N, T), generator=g),
                   completion_mask=torch.ones(N, T, dtype=torch.bool), logp=torch.zeros(N, T),
                   truncated=torch.tensor(truncated), texts=[""] * N)
    return copy.deepcopy(tiny_model), UpdateBatch(roll, torch.tensor(adv))


def _update(model, batch, overlong):
    from reasoner.optim import Optimizer
    from reasoner.update import UpdateParams, ppo_update

    cfg = load_config(None, [f"algo.overlong={overlong}", "algo.beta=0", "algo.loss_agg=token_mean",
                             "optim.lr=0.01", "sampling.max_new_tokens=3"])
    opt = Optimizer(model, cfg.optim, 1, make=lambda ps: torch.optim.SGD(ps, lr=cfg.optim.lr))
    ppo_update(model, opt, batch, UpdateParams.of(cfg), torch.Generator().manual_seed(0))
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_update_ignores_truncated_rows_when_masked(tiny_model):
    # Rows 1 and 3 are truncated. With overlong=mask their advantage must not matter: two batches
    # that differ only there give the same parameters after one SGD step.
    m1, b1 = _toy_model_and_batch(tiny_model, [False, True, False, True], [1.0, 5.0, -1.0, -3.0])
    m2, b2 = _toy_model_and_batch(tiny_model, [False, True, False, True], [1.0, -2.0, -1.0, 7.0])
    assert_close(_update(m1, b1, "mask"), _update(m2, b2, "mask"))
    # without the mask they do matter (the test can fail)
    m3, b3 = _toy_model_and_batch(tiny_model, [False, True, False, True], [1.0, 5.0, -1.0, -3.0])
    m4, b4 = _toy_model_and_batch(tiny_model, [False, True, False, True], [1.0, -2.0, -1.0, 7.0])
    assert not torch.allclose(_update(m3, b3, "none"), _update(m4, b4, "none"))


# --- extra reward functions -------------------------------------------------------------


@pytest.mark.parametrize("text, problem, expected", [
    ("82", SYN, 1.0), (" 82\n", SYN, 1.0), ("-5/6", SYN, 1.0), ("8a2", SYN, 0.0), ("82=", SYN, 0.0), ("", SYN, 0.0),
    ("so the answer is $\\boxed{5}$", MATH, 1.0), ("The answer is 5.", MATH, 1.0), ("5", MATH, 0.0),
    ("I think it's about five", MATH, 0.0),
    ("```python\ndef f():\n    return 1\n```", CODE, 1.0), ("def f(): return 1", CODE, 0.0),
])
def test_format_reward(text, problem, expected):
    assert format_reward(text, problem) == expected


def test_length_reward():
    # -len / 1000, floored at -1: 250 chars -> -0.25, 5000 chars -> -1
    assert length_reward("a" * 250, SYN) == pytest.approx(-0.25)
    assert length_reward("a" * 5000, SYN) == -1.0
    assert length_reward("", SYN) == 0.0


def test_extra_rewards_weighted_sum_and_parts():
    texts, probs = ["82", "a" * 100], [SYN, SYN]
    total, parts = extra_rewards(texts, probs, {"format": 0.5, "length": 2.0})
    # format [1, 0]; length [-2/1000, -100/1000] = [-0.002, -0.1]
    # total = 0.5 * [1, 0] + 2 * [-0.002, -0.1] = [0.496, -0.2]
    assert_close(parts["format"], torch.tensor([1.0, 0.0]))
    assert_close(parts["length"], torch.tensor([-0.002, -0.1]))
    assert_close(total, torch.tensor([0.496, -0.2]))
    total, parts = extra_rewards(texts, probs, {})
    assert_close(total, torch.zeros(2)) and parts == {}


def test_extra_rewards_plugin_registry():
    @REWARDS.register("test_starts_with_8")
    def starts_with_8(completion, problem):
        return float(completion.startswith("8"))

    total, parts = extra_rewards(["82", "18"], [SYN, SYN], {"test_starts_with_8": -1.0})
    assert_close(total, torch.tensor([-1.0, 0.0]))


def test_extra_rewards_bad_input():
    with pytest.raises(KeyError, match="format, length"):
        extra_rewards(["x"], [SYN], {"nope": 1.0})
    with pytest.raises(ValueError, match="reserved"):
        extra_rewards(["x"], [SYN], {"mean": 1.0})
    with pytest.raises(ValueError, match="finite"):
        extra_rewards(["x"], [SYN], {"format": float("nan")})
    with pytest.raises(ValueError, match="2 completions but 1"):
        extra_rewards(["x", "y"], [SYN], {"format": 1.0})


def test_shape_rewards_combines_score_extras_and_soft_overlong():
    algo = AlgoConfig(reward_weights={"format": 0.1}, overlong="soft", overlong_buffer=4, overlong_penalty=1.0)
    scores = torch.tensor([1.0, 0.0, 1.0])
    texts = ["82", "8 2", "82"]
    lengths = torch.tensor([3, 4, 15])
    rewards, parts = shape_rewards(scores, texts, [SYN] * 3, lengths, algo, max_new_tokens=16)
    # format [1, 0, 1] * 0.1 = [0.1, 0, 0.1]; overlong (expected 12): [0, 0, (12 - 15) / 4 = -0.75]
    # rewards = [1 + 0.1 + 0, 0 + 0 + 0, 1 + 0.1 - 0.75] = [1.1, 0, 0.35]
    assert_close(rewards, torch.tensor([1.1, 0.0, 0.35]))
    assert_close(parts["overlong"], torch.tensor([0.0, 0.0, -0.75]))
    m = reward_metrics(rewards, parts)
    assert m["reward/total"] == pytest.approx(1.45 / 3)
    assert m["reward/format"] == pytest.approx(2 / 3) and m["reward/overlong"] == pytest.approx(-0.25)
    # overlong "none" and "mask" add nothing to the reward
    for mode in ("none", "mask"):
        r, p = shape_rewards(scores, texts, [SYN] * 3, lengths, AlgoConfig(overlong=mode), max_new_tokens=16)
        assert_close(r, scores) and p == {}


def test_reward_metrics_reach_metrics_jsonl(tiny_model_dir, tmp_path):
    import json

    from reasoner.trainer import train

    cfg = load_config(None, [f"model.name={tiny_model_dir}", f"run.out_dir={tmp_path}", "run.progress=false",
                             "run.steps=2", "data.eval_size=4", "run.batch_size=2", "sampling.group_size=2",
                             "sampling.max_new_tokens=4", "run.threads=1", "data.synthetic_size=64",
                             "algo.overlong=soft", "algo.overlong_buffer=2",
                             "algo.reward_weights={format: 0.1, length: 1.0}", "run.log_samples_every=0"])
    train(cfg)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    for row in rows[1:]:
        for key in ("reward/total", "reward/format", "reward/length", "reward/overlong", "reward/mean"):
            assert isinstance(row[key], float), key
        assert -1.0 <= row["reward/overlong"] <= 0.0 and 0.0 <= row["reward/format"] <= 1.0
