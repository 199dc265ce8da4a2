"""algo.advantage=gae: the critic's value alignment, its advantages by hand, its value loss, a run.

GAE itself is pinned by hand in tests/test_advantages.py (test_gae_by_hand,
test_gae_lam_1_returns_are_monte_carlo); here the critic's wiring around it.
"""
from __future__ import annotations

import json

import pytest
import torch
from torch.testing import assert_close

from reasoner.commands.list import registries
from reasoner.config import ConfigError, load_config
from reasoner.advantages import Advantages
from reasoner.critic import Critic, CriticParams, masked_whiten
from reasoner.kl import RewardKL
from reasoner.trainer import train
from reasoner.types import Rollout


@pytest.fixture(scope="module")
def policy(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir).float()


def _params(**kw) -> CriticParams:
    return CriticParams(**kw)


NO_KL = RewardKL(None, 0.0, "k3")


def _roll(logp=None) -> Rollout:
    """Two rows: prompts [5, 6, 7] and [pad, 8, 9] (left padded); completions of 2 and 1 tokens."""
    return Rollout(prompt_ids=torch.tensor([[5, 6, 7], [0, 8, 9]]),
                   prompt_mask=torch.tensor([[True, True, True], [False, True, True]]),
                   completion_ids=torch.tensor([[10, 11], [12, 0]]),
                   completion_mask=torch.tensor([[True, True], [True, False]]),
                   logp=torch.zeros(2, 2) if logp is None else logp, truncated=torch.tensor([False, False]),
                   texts=["ab", "c"])


def test_values_read_the_state_before_each_completion_token(policy):
    torch.manual_seed(0)
    critic = Critic(policy, _params())
    torch.nn.init.normal_(critic.head.weight)  # non-zero values to compare
    critic.eval()
    roll = _roll()
    with torch.no_grad():
        v = critic.values(roll)
        # row 1 unpadded, [8, 9, 12]: token 12 is predicted at position 1 (the last prompt token)
        h = critic.backbone(input_ids=torch.tensor([[8, 9, 12]])).last_hidden_state[0]
        assert_close(v[1, 0], critic.head(h[1])[0])
        assert v[1, 1] == 0  # off the completion mask
        # row 0, [5, 6, 7, 10, 11]: values at positions 2 and 3 (predicting tokens 10 and 11)
        h = critic.backbone(input_ids=torch.tensor([[5, 6, 7, 10, 11]])).last_hidden_state[0]
        assert_close(v[0], critic.head(h[2:4]).squeeze(-1))
        # V_1 is the state before token 1: changing token 1 leaves it, changing token 0 does not
        changed = _roll()
        changed.completion_ids[0, 1] = 13
        assert_close(critic.values(changed)[0], v[0])
        changed.completion_ids[0, 0] = 14
        assert not torch.allclose(critic.values(changed)[0, 1], v[0, 1])


def test_advantages_by_hand_with_zero_values(policy):
    # the head starts at 0, so V = 0 everywhere; scores [1, 2] land on each row's last token:
    # rewards = [[0, 1], [2, pad]]; gamma = 1, lam = .95, delta_t = r_t:
    #   row 0: A1 = 1, A0 = 0 + .95 * 1 = .95;  row 1: A0 = 2     returns = A + V = A
    # whitened over the 3 real tokens [.95, 1, 2]: mean = 3.95 / 3 = 1.316667,
    # population var = (.366667^2 + .316667^2 + .683333^2) / 3 = .233889, std = .483621
    # -> [(.95 - 1.316667) / .483621, (1 - 1.316667) / .483621, (2 - 1.316667) / .483621]
    critic = Critic(policy, _params(gamma=1.0, lam=0.95))
    adv, returns, old_v = critic.advantages(_roll(), torch.tensor([1.0, 2.0]), NO_KL)
    assert_close(old_v, torch.zeros(2, 2))
    assert_close(returns, torch.tensor([[0.95, 1.0], [2.0, 0.0]]))
    assert_close(adv, torch.tensor([[-0.758182, -0.654795], [1.412977, 0.0]]), atol=1e-5, rtol=1e-5)


def test_kl_enters_the_per_token_reward(policy):
    # k1 KL = logp - ref: row 0 [-1 - (-1.5), -2 - (-1)] = [.5, -1], row 1 [0]; beta = .1
    # rewards row 0 = [-.05, 1 + .1] ; row 1 = [2 - 0]; gamma = lam = 1, V = 0:
    # returns = sums of future rewards = [[-.05 + 1.1, 1.1], [2, 0]] = [[1.05, 1.1], [2, 0]]
    roll = _roll(logp=torch.tensor([[-1.0, -2.0], [-1.0, 0.0]]))
    ref = torch.tensor([[-1.5, -1.0], [-1.0, 0.0]])
    _, returns, _ = Critic(policy, _params(gamma=1.0, lam=1.0)).advantages(roll, torch.tensor([1.0, 2.0]),
                                                                           RewardKL(ref, 0.1, "k1"))
    assert_close(returns, torch.tensor([[1.05, 1.1], [2.0, 0.0]]))


def test_masked_whiten_ignores_padding():
    # masked [1, 3] -> mean 2, std 1 -> [-1, 1]; the pad value 100 is ignored and set to 0
    out = masked_whiten(torch.tensor([[1.0, 3.0, 100.0]]), torch.tensor([[True, True, False]]))
    assert_close(out, torch.tensor([[-1.0, 1.0, 0.0]]), atol=1e-6, rtol=1e-6)


def test_value_loss_decreases_on_fixed_returns(policy):
    torch.manual_seed(0)
    critic = Critic(policy, _params(lr=1e-3, value_clip=100.0))  # wide clip: plain regression towards the returns
    roll = _roll()
    returns = torch.tensor([[0.5, 1.0], [-1.0, 0.0]])
    old_v = critic.values(roll).detach()
    losses = [critic.update(roll, Advantages(returns, returns, old_v))["critic/value_loss"] for _ in range(8)]
    # V = 0 at first: 0.5 * (.25 + 1 + 1) / 3 = .375
    assert losses[0] == pytest.approx(0.375, abs=1e-6)
    assert losses[-1] < 0.5 * losses[0], losses
    for p, q in zip(critic.backbone.parameters(), policy.model.parameters()):
        assert p.data_ptr() != q.data_ptr()  # a copy: the policy's weights are untouched


def test_gae_is_a_valid_choice_and_listed():
    assert "gae" in registries()["advantage estimators (algo.advantage)"]
    assert load_config(None, ["algo.advantage=gae"]).algo.advantage == "gae"
    with pytest.raises(ConfigError, match="gae"):
        load_config(None, ["algo.advantage=nope"])
    with pytest.raises(ConfigError, match="algo.lam"):
        load_config(None, ["algo.lam=1.5"])


def test_three_step_run_with_gae_logs_the_value_loss(tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    cfg = load_config(None, [f"model.name={tiny_model_dir}", "run.steps=3", "data.eval_size=8", "run.progress=false",
                             "run.batch_size=4", "sampling.group_size=4", "sampling.max_new_tokens=4",
                             f"run.out_dir={out}", "algo.advantage=gae", "run.threads=2", "run.eval_every=0"])
    train(cfg)
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [r["critic/value_loss"] for r in rows if "critic/value_loss" in r]
    assert len(losses) == 3 and all(x == x and x >= 0 for x in losses), losses
    state = torch.load(next((out / "checkpoints").glob("step-*")) / "trainer_state.pt", weights_only=False)
    assert "critic" in state
