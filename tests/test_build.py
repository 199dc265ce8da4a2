"""The build step's parts on their own: the KL term, the advantage stage, records, the timer."""
import math
import time

import pytest
import torch
from torch.testing import assert_close

from reasoner import kl
from reasoner.advantages import ADVANTAGES, GroupAdvantage
from reasoner.dynamic import Scored, cat_scored, take_groups
from reasoner.metrics import Timer
from reasoner.types import Rollout, cat_rollouts


def _roll(logp, mask, prompt_len=2):
    n, t = len(logp), len(logp[0])
    return Rollout(torch.arange(n * prompt_len).view(n, prompt_len), torch.ones(n, prompt_len, dtype=torch.bool),
                   torch.arange(n * t).view(n, t), torch.tensor(mask), torch.tensor(logp),
                   torch.zeros(n, dtype=torch.bool), [f"c{i}" for i in range(n)])


def test_kl_placements_are_built_once_from_the_config_values():
    assert type(kl.make("loss", 0.0, "k3", 0.0, 100)) is kl.NoKL  # beta = 0: no term, wherever it was put
    assert type(kl.make("loss", 0.1, "k3", 0.0, 100)) is kl.KLInLoss
    assert type(kl.make("reward", 0.1, "k3", 0.0, 100)) is kl.KLInReward
    with pytest.raises(KeyError, match="loss, reward"):
        kl.make("nowhere", 0.1, "k3", 0.0, 100)


def test_kl_in_the_reward_goes_to_the_advantages_not_the_loss():
    # one group of G = 2; k1 KL = logp - ref per token: row 0 [.5, -1] (mask [1, 1]), row 1 [.2, pad]
    # beta .1: rewards [1, 0] - .1 * [.5 - 1, .2] = [1.05, -.02]; grpo: mean .515, sample std
    # sqrt(2) * .535 = .756604 -> adv = [.535, -.535] / (.756604 + 1e-6) = [.707106, -.707106]
    roll = _roll([[-1.0, -2.0], [-1.0, 0.0]], [[True, True], [True, False]])
    ref = torch.tensor([[-1.5, -1.0], [-1.2, 0.0]])
    term = kl.make("reward", 0.1, "k1", 0.0, 100)
    stage = GroupAdvantage(ADVANTAGES.get("grpo"), group_size=2)
    adv = stage(roll, torch.tensor([1.0, 0.0]), term.for_reward(roll, lambda: ref)).adv
    assert_close(adv, torch.tensor([0.707106, -0.707106]), atol=1e-5, rtol=1e-5)
    loss_ref, beta = term.for_loss(lambda: ref)
    assert loss_ref() is None and beta == 0.0
    # in the loss instead: the rewards are left alone, the loss gets the reference and beta
    in_loss = kl.make("loss", 0.1, "k1", 0.0, 100)
    assert in_loss.for_reward(roll, lambda: ref).ref_logp is None
    loss_ref, beta = in_loss.for_loss(lambda: ref)
    assert loss_ref() is ref and beta == 0.1


def test_the_adaptive_coefficient_follows_the_kl_of_its_own_placement():
    # target .01, horizon 10; e = clip(kl / .01 - 1, -.2, .2)
    # in the loss: loss/kl = .02 -> e = .2 -> beta .1 * (1 + .2 / 10) = .102
    term = kl.make("loss", 0.1, "k1", 0.01, 10)
    term.adapt({"loss/kl": 0.02})
    assert term.beta == pytest.approx(0.102)
    # in the reward: the mean k1 over the 3 real tokens (.5 - 1 + .2) / 3 = -.1 -> e = -.2 -> .1 * .98 = .098
    roll = _roll([[-1.0, -2.0], [-1.0, 0.0]], [[True, True], [True, False]])
    term = kl.make("reward", 0.1, "k1", 0.01, 10)
    term.for_reward(roll, lambda: torch.tensor([[-1.5, -1.0], [-1.2, 0.0]]))
    term.adapt({})
    assert term.beta == pytest.approx(0.098)
    fixed = kl.make("loss", 0.1, "k1", 0.0, 10)  # no target: constant
    fixed.adapt({"loss/kl": 5.0})
    assert fixed.beta == 0.1


def test_records_join_pick_and_map_every_field():
    a = _roll([[-1.0, -2.0], [-3.0, 0.0]], [[True, True], [True, False]], prompt_len=2)
    b = _roll([[-4.0]], [[True]], prompt_len=3)
    both = cat_rollouts([a, b], pad_id=9)
    # prompts left padded to 3 with 9 / False, completions right padded to 2 with 9 / False / 0.0
    assert both.prompt_ids.tolist() == [[9, 0, 1], [9, 2, 3], [0, 1, 2]]
    assert both.prompt_mask.tolist() == [[False, True, True], [False, True, True], [True, True, True]]
    assert both.completion_ids.tolist() == [[0, 1], [2, 3], [0, 9]]
    assert both.logp.tolist() == [[-1.0, -2.0], [-3.0, 0.0], [-4.0, 0.0]]
    assert both.texts == ["c0", "c1", "c0"]
    picked = both.rows([2, 0])
    assert picked.texts == ["c0", "c0"] and picked.logp.tolist() == [[-4.0, 0.0], [-1.0, -2.0]]
    doubled = both.map(lambda x: x * 2 if x.is_floating_point() else x)
    assert doubled.logp[2, 0] == -8.0 and doubled.completion_ids.equal(both.completion_ids)


def test_scored_groups_keep_problems_per_group_and_completions_per_row():
    roll = _roll([[0.0]] * 4, [[True]] * 4)
    s = Scored(["p0", "p1"], ["q0", "q1"], roll, ["v0", "v1", "v2", "v3"], torch.tensor([1.0, 0.0, 0.0, 1.0]),
               torch.tensor([1.5, 0.5, 0.5, 1.5]), {"format": torch.tensor([1.0, 2.0, 3.0, 4.0])})
    one = take_groups(s, [1], G=2)  # group 1 = rows 2, 3
    assert one.problems == ["p1"] and one.verdicts == ["v2", "v3"] and one.parts["format"].tolist() == [3.0, 4.0]
    back = cat_scored([take_groups(s, [0], 2), one])
    assert back.problems == s.problems and back.roll.texts == s.roll.texts and back.rewards.equal(s.rewards)


def test_timer_charges_a_wait_to_the_section_it_belongs_to():
    t = Timer()
    fetch = t.charged(lambda: time.sleep(0.05) or 1, "reference")
    with t("update"):
        assert fetch() == 1
    # the update's block ran >= 50 ms, all of it waiting: the wait is the reference's
    assert t.seconds["reference"] >= 0.05 and t.seconds["update"] < 0.02
    assert math.isclose(sum(t.seconds.values()), t.seconds["reference"] + t.seconds["update"])


class _FixedLogp:
    """An engine whose log-probs are a fixed tensor (the trainer's "old" log-probs)."""

    lean = False

    def __init__(self, logp):
        self.value = logp

    def logp(self, model, pids, pmask, cids, cmask, temperature=1.0, **kw):
        return self.value, None

    def sized(self, model, tokens):
        import contextlib

        return contextlib.nullcontext()


def test_old_logp_policy_and_mismatch_correction_are_picked_once():
    from reasoner.build import _old_logp
    from reasoner.config import load_config
    from reasoner.mismatch import IS_LEVELS

    # the trainer's own sampler, one epoch of one minibatch: reuse (nothing to compute, no weights)
    assert _old_logp(None, load_config(None, []), _FixedLogp(None))(None) == (None, None)
    # minibatches > 1: recompute, but no correction (this very model sampled)
    assert _old_logp(None, load_config(None, ["algo.minibatches=2"]), _FixedLogp(None)).correction is None
    # engine rollouts: recompute with the sequence-level masked weights
    # trainer - sampler: row 0 [.5, -1] -> e^-.5 = .606531 < 1/1.5: masked; row 1 [.2, .1] -> e^.3 = 1.349859
    trainer = torch.tensor([[-1.0, -2.0], [-1.0, -1.0]])
    cfg = load_config(None, ["sampling.backend=vllm", "sampling.vllm_tis_cap=1.5", "sampling.vllm_is_level=sequence",
                             "sampling.vllm_is_mode=mask"])
    old_logp = _old_logp(None, cfg, _FixedLogp(trainer))
    assert old_logp.correction.level is IS_LEVELS.get("sequence")
    roll = _roll([[-1.5, -1.0], [-1.2, -1.1]], [[True, True], [True, True]])
    old, weights = old_logp(roll)
    assert old is trainer
    assert_close(weights, torch.tensor([[0.0, 0.0], [math.exp(0.3)] * 2]))


def test_truncation_warning_names_the_key_once_past_half(capsys):
    from reasoner.run import truncation_warning, warn_truncation

    assert truncation_warning(3, 0.5, 16) is None  # half is not more than half
    msg = truncation_warning(3, 0.75, 16)
    assert "sampling.max_new_tokens=16" in msg and "75%" in msg and "step 3" in msg and "\n" not in msg
    assert warn_truncation(3, 0.75, 16) and not warn_truncation(4, 0.25, 16)
    assert capsys.readouterr().err.count("sampling.max_new_tokens=16") == 1
