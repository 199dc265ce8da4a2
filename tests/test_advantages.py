"""Advantage estimators against hand-derived values (docs/algorithms.md, "Advantages")."""
import math

import pytest
import torch
from torch.testing import assert_close

from reasoner.advantages import ADVANTAGES, frac_zero_std_groups, gae

# What each estimator promises about its mean (every registered name must be listed here).
GROUP_ZERO_MEAN = {"grpo", "dr_grpo", "rloo", "reinforce_pp_baseline"}
BATCH_ZERO_MEAN = {"batch_mean", "reinforce_pp"}


def adv(name, rewards):
    return ADVANTAGES.get(name)(torch.tensor(rewards, dtype=torch.float32))


def test_grpo_divides_by_group_sample_std():
    # group 1: r = [1,0,0,1], mean .5, centred ±.5, sample var = 4*.25/3 = 1/3 -> std = 3**-.5
    #          adv = ±.5 / (3**-.5 + 1e-6) ~= ±0.8660
    # group 2: r = [1,1,1,0], mean .75, centred [.25,.25,.25,-.75], var = (3*.0625+.5625)/3 = .25,
    #          std = .5 -> adv = [.5,.5,.5,-1.5] (up to the 1e-6)
    a = 0.5 / (3 ** -0.5 + 1e-6)
    expected = torch.tensor([[a, -a, -a, a], [0.5, 0.5, 0.5, -1.5]])
    assert_close(adv("grpo", [[1, 0, 0, 1], [1, 1, 1, 0]]), expected, atol=1e-5, rtol=1e-5)


def test_dr_grpo_only_centres():
    # r - group mean: means .5 and .75
    expected = torch.tensor([[0.5, -0.5, -0.5, 0.5], [0.25, 0.25, 0.25, -0.75]])
    assert_close(adv("dr_grpo", [[1, 0, 0, 1], [1, 1, 1, 0]]), expected)


def test_rloo_leaves_one_out():
    # r = [1,0,0]: 1 - mean(0,0) = 1; 0 - mean(1,0) = -.5 (twice)
    # same as G/(G-1)*(r - mean) = 1.5*(2/3) = 1, 1.5*(-1/3) = -.5
    assert_close(adv("rloo", [[1, 0, 0]]), torch.tensor([[1.0, -0.5, -0.5]]))


def test_batch_mean_uses_one_baseline_for_the_batch():
    # batch mean of [1,0,1,1] = .75; the uniform group [1,1] still gets +.25 each
    assert_close(adv("batch_mean", [[1, 0], [1, 1]]), torch.tensor([[0.25, -0.75], [0.25, 0.25]]))


def test_reinforce_pp_normalises_with_batch_statistics():
    # batch [1,0,1,1]: mean .75, centred [.25,-.75,.25,.25], sample var = (3*.0625+.5625)/3 = .25,
    # std .5 -> [.5, -1.5, .5, .5] (up to the 1e-6)
    expected = torch.tensor([[0.5, -1.5], [0.5, 0.5]])
    assert_close(adv("reinforce_pp", [[1, 0], [1, 1]]), expected, atol=1e-5, rtol=1e-5)


def test_reinforce_pp_baseline_centres_per_group_and_scales_by_the_batch():
    # groups [1,0,0,1] and [1,1,1,0]: centred by their own means .5 and .75 ->
    #   c = [.5,-.5,-.5,.5, .25,.25,.25,-.75]; batch mean of c = 0; sum c^2 = 4*.25 + 3*.0625 + .5625 = 1.75;
    #   sample var 1.75 / 7 = .25 -> std .5 -> adv = c / .5 = [1,-1,-1,1, .5,.5,.5,-1.5] (up to the 1e-6)
    # grpo would scale each group by its own std (3**-.5 and .5); reinforce_pp centres by the batch mean .625
    expected = torch.tensor([[1.0, -1.0, -1.0, 1.0], [0.5, 0.5, 0.5, -1.5]])
    assert_close(adv("reinforce_pp_baseline", [[1, 0, 0, 1], [1, 1, 1, 0]]), expected, atol=1e-5, rtol=1e-5)
    # a uniform group adds nothing to the std: [2,2] beside [1,0] -> c = [0,0,.5,-.5], var = .5/3
    a = 0.5 / ((0.5 / 3) ** 0.5 + 1e-6)
    assert_close(adv("reinforce_pp_baseline", [[2, 2], [1, 0]]), torch.tensor([[0.0, 0.0], [a, -a]]))


def test_every_estimator_declares_its_mean_promise():
    assert set(ADVANTAGES.names()) == GROUP_ZERO_MEAN | BATCH_ZERO_MEAN


@pytest.mark.parametrize("name", ADVANTAGES.names())
def test_estimator_contract(name):
    fn = ADVANTAGES.get(name)
    r = torch.tensor([[1.0, 0.0, 0.5, 0.0], [0.2, 0.9, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0]])
    a = fn(r)
    assert a.shape == r.shape and a.dtype == torch.float32
    assert torch.isfinite(a).all()
    if name in GROUP_ZERO_MEAN:
        assert_close(a.mean(dim=1), torch.zeros(3), atol=1e-6, rtol=0)
        assert_close(a[2], torch.zeros(4))  # a uniform group teaches nothing
    else:
        assert_close(a.mean(), torch.tensor(0.0), atol=1e-6, rtol=0)
    uniform = fn(torch.ones(2, 4))  # all rewards equal: zero advantage, no NaN
    assert_close(uniform, torch.zeros(2, 4))
    single = fn(torch.tensor([[1.0], [0.0], [1.0]]))  # G = 1
    assert single.shape == (3, 1) and torch.isfinite(single).all()
    if name in GROUP_ZERO_MEAN:
        assert_close(single, torch.zeros(3, 1))
    one = fn(torch.tensor([[0.7]]))  # B = G = 1
    assert_close(one, torch.zeros(1, 1))


@pytest.mark.parametrize("name", ADVANTAGES.names())
def test_estimator_rejects_bad_rewards(name):
    fn = ADVANTAGES.get(name)
    with pytest.raises(ValueError, match=r"\[B, G\]"):
        fn(torch.ones(4))
    with pytest.raises(ValueError, match="NaN"):
        fn(torch.tensor([[1.0, math.nan]]))


def test_unknown_estimator_lists_valid_names():
    with pytest.raises(KeyError) as err:
        ADVANTAGES.get("ppo_magic")
    for name in ("grpo", "dr_grpo", "rloo", "batch_mean", "reinforce_pp", "reinforce_pp_baseline"):
        assert name in str(err.value)


def test_frac_zero_std_groups():
    # groups [1,1] and [0,0] are uniform, [0,1] is not -> 2/3
    assert frac_zero_std_groups(torch.tensor([[1.0, 1.0], [0.0, 1.0], [0.0, 0.0]])) == pytest.approx(2 / 3)


def test_gae_by_hand():
    # one completion of 2 real tokens (+1 pad with a junk value 9), r = [0, 1], V = [.5, .8],
    # gamma = 1, lam = .5, V after the last real token = 0:
    #   t=1: delta = 1 + 0 - .8 = .2,   A1 = .2
    #   t=0: delta = 0 + .8 - .5 = .3,  A0 = .3 + .5 * .2 = .4
    # returns = A + V = [.9, 1.0]; the pad gets 0
    r = torch.tensor([[0.0, 1.0, 5.0]])
    v = torch.tensor([[0.5, 0.8, 9.0]])
    m = torch.tensor([[True, True, False]])
    a, ret = gae(r, v, m, gamma=1.0, lam=0.5)
    assert_close(a, torch.tensor([[0.4, 0.2, 0.0]]))
    assert_close(ret, torch.tensor([[0.9, 1.0, 0.0]]))


def test_gae_lam_1_returns_are_monte_carlo():
    # gamma = lam = 1: returns = sum of future rewards, whatever V is: [0+2+1, 2+1, 1] = [3, 3, 1]
    r = torch.tensor([[0.0, 2.0, 1.0], [1.0, 0.0, 0.0]])
    v = torch.tensor([[0.3, -1.0, 4.0], [2.0, 7.0, 7.0]])
    m = torch.tensor([[True, True, True], [True, False, False]])
    _, ret = gae(r, v, m, gamma=1.0, lam=1.0)
    assert_close(ret, torch.tensor([[3.0, 3.0, 1.0], [1.0, 0.0, 0.0]]))


def test_gae_rejects_bad_input():
    with pytest.raises(ValueError, match="one \\[N, T\\] shape"):
        gae(torch.zeros(2, 3), torch.zeros(2, 4), torch.ones(2, 3, dtype=torch.bool), 1.0, 1.0)
    with pytest.raises(ValueError, match="gamma"):
        gae(torch.zeros(1, 1), torch.zeros(1, 1), torch.ones(1, 1, dtype=torch.bool), 1.5, 1.0)
