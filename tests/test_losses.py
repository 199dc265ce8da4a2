"""Policy loss, aggregation and KL estimators against hand-derived values (docs/algorithms.md)."""
import math

import pytest
import torch
from torch.testing import assert_close

from reasoner.config import ConfigError, load_config
from reasoner.losses import (
    AGGREGATIONS, KL_ESTIMATORS, AdaptiveKL, LossParams, adaptive_kl_update, kl_penalized_rewards,
    policy_loss, token_entropy, value_loss,
)

LN = math.log
T = torch.tensor


def cfg(**kw):
    """The loss's parameters as keywords (token_mean unless given), plus ``beta`` and ``kl_in``:
    what the KL term passes the loss (beta when the KL sits in the loss, 0 in the reward)."""
    return {"loss_agg": "token_mean", **kw}


def loss_args(c, norm_len):
    c = dict(c)
    beta, in_loss = c.pop("beta", 0.0), c.pop("kl_in", "loss") == "loss"
    return LossParams(norm_len=norm_len, **c), beta if in_loss else 0.0


def run(logp, old_logp, adv, mask=None, c=None, **kw):
    """policy_loss on float lists; returns (LossOut, grad of logp)."""
    lp = T(logp, dtype=torch.float32).requires_grad_(True)
    old = T(old_logp, dtype=torch.float32)
    mask = torch.ones_like(old, dtype=torch.bool) if mask is None else T(mask)
    params, beta = loss_args(c or cfg(), kw.pop("norm_len", lp.shape[1]))
    out = policy_loss(lp, old, T(adv, dtype=torch.float32), mask, params, beta=beta, **kw)
    out.loss.backward()
    return out, lp.grad


# --- KL estimators ---------------------------------------------------------------------------

# logp = ln .5, ref = ln .25 -> log_ratio = ref - logp = ln .5 = -0.693147
#   k1 = -log_ratio = 0.693147;  k2 = .5 * 0.480453 = 0.240227;  k3 = .5 + 0.693147 - 1 = 0.193147
KL_BY_HAND = {"k1": LN(2), "k2": 0.5 * LN(2) ** 2, "k3": 0.5 + LN(2) - 1}


def test_every_kl_estimator_has_a_hand_value():
    assert set(KL_ESTIMATORS.names()) == set(KL_BY_HAND)


@pytest.mark.parametrize("name", sorted(KL_BY_HAND))
def test_kl_estimator_by_hand(name):
    kl = KL_ESTIMATORS.get(name)(T([[LN(0.5), 0.0]]), T([[LN(0.25), 0.0]]))
    # second token: logp == ref -> every estimator is 0
    assert_close(kl, T([[KL_BY_HAND[name], 0.0]]))


@pytest.mark.parametrize("name", ["k2", "k3"])
def test_kl_estimators_k2_k3_are_nonnegative(name):
    g = torch.Generator().manual_seed(0)
    logp, ref = torch.randn(64, 8, generator=g), torch.randn(64, 8, generator=g)
    assert (KL_ESTIMATORS.get(name)(logp, ref) >= 0).all()


def test_k1_and_k3_are_unbiased_estimates_of_kl():
    # samples x ~ p = softmax(a); KL(p || q) = sum p (ln p - ln q); k1, k3 at x average to it
    p, q = torch.tensor([0.7, 0.2, 0.1]), torch.tensor([0.4, 0.4, 0.2])
    exact = (p * (p / q).log()).sum()
    x = torch.multinomial(p, 200_000, replacement=True, generator=torch.Generator().manual_seed(0))
    logp, ref = p.log()[x][None], q.log()[x][None]
    for name in ("k1", "k3"):
        assert_close(KL_ESTIMATORS.get(name)(logp, ref).mean(), exact, atol=5e-3, rtol=0)


# --- aggregation -------------------------------------------------------------------------------

# x = [[1,2,3,4],[10, pad 99, pad 99, pad 99]]:
#   seq_mean_token_mean    = mean(2.5, 10)             = 6.25
#   token_mean             = (1+2+3+4+10) / 5          = 4.0
#   seq_mean_token_sum_norm (norm_len 4) = 20 / (2*4)  = 2.5
AGG_BY_HAND = {"seq_mean_token_mean": 6.25, "token_mean": 4.0, "seq_mean_token_sum_norm": 2.5}
X = T([[1.0, 2.0, 3.0, 4.0], [10.0, 99.0, 99.0, 99.0]])
M = T([[True, True, True, True], [True, False, False, False]])


def test_every_aggregation_has_a_hand_value():
    assert set(AGGREGATIONS.names()) == set(AGG_BY_HAND)


@pytest.mark.parametrize("name", sorted(AGG_BY_HAND))
def test_aggregation_by_hand(name):
    assert_close(AGGREGATIONS.get(name)(X, M, 4), T(AGG_BY_HAND[name]))


@pytest.mark.parametrize("name", sorted(AGG_BY_HAND))
def test_aggregation_of_a_constant_on_full_mask_is_the_constant(name):
    full = torch.ones(3, 5, dtype=torch.bool)
    assert_close(AGGREGATIONS.get(name)(torch.full((3, 5), -0.3), full, 5), T(-0.3))


def test_aggregation_weights_short_vs_long_completion():
    # one short completion (1 token) and one long (4 tokens); d loss / d x_t is each token's weight:
    #   seq_mean_token_mean:     short token 1/(2*1) = .5, long tokens 1/(2*4) = .125 (short x4)
    #   token_mean:              every token 1/5 = .2
    #   seq_mean_token_sum_norm: every token 1/(2*norm_len) = 1/(2*8) = .0625, whatever the lengths
    mask = T([[True, False, False, False], [True, True, True, True]])
    expected = {
        "seq_mean_token_mean": T([[0.5, 0, 0, 0], [0.125] * 4]),
        "token_mean": T([[0.2, 0, 0, 0], [0.2] * 4]),
        "seq_mean_token_sum_norm": T([[0.0625, 0, 0, 0], [0.0625] * 4]),
    }
    for name, weights in expected.items():
        x = torch.zeros(2, 4, requires_grad=True)
        AGGREGATIONS.get(name)(x, mask, 8).backward()
        assert_close(x.grad, weights, msg=name)


def test_token_sum_norm_needs_positive_norm_len():
    with pytest.raises(ValueError, match="norm_len"):
        AGGREGATIONS.get("seq_mean_token_sum_norm")(X, M, 0)


@pytest.mark.parametrize("registry", [AGGREGATIONS, KL_ESTIMATORS])
def test_unknown_names_list_valid_ones(registry):
    with pytest.raises(KeyError) as err:
        registry.get("nope")
    assert all(name in str(err.value) for name in registry.names())


def test_policy_loss_unknown_aggregation_lists_valid_ones():
    with pytest.raises(KeyError, match="seq_mean_token_mean"):
        run([[0.0]], [[0.0]], [1.0], c=cfg(loss_agg="nope"))


# --- the clipped surrogate -------------------------------------------------------------------


def test_on_policy_loss_is_minus_mean_advantage():
    # ratio 1: per-token loss = -A = [[-1,-1],[+1, pad]]
    #   token_mean = (-1 -1 +1)/3 = -1/3;  seq_mean_token_mean = mean(-1, +1) = 0
    mask = [[True, True], [True, False]]
    out, _ = run([[0.0, 0.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]], [1.0, -1.0], mask)
    assert_close(out.loss, T(-1 / 3))
    out, _ = run([[0.0, 0.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]], [1.0, -1.0], mask, c=cfg(loss_agg="seq_mean_token_mean"))
    assert_close(out.loss, T(0.0))


def test_gradient_pushes_positive_advantage_up_and_negative_down():
    # ratio 1, token_mean over 2 tokens: loss = -(A1 rho1 + A2 rho2)/2, d/dlogp_i = -A_i/2
    out, grad = run([[-1.0], [-1.0]], [[-1.0], [-1.0]], [2.0, -2.0])
    assert_close(grad, T([[-1.0], [1.0]]))
    # one SGD step (logp - lr * grad) raises the positive token's log-prob, lowers the negative's
    assert grad[0, 0] < 0 < grad[1, 0]


def test_per_token_advantages_are_accepted():
    out, grad = run([[0.0, 0.0]], [[0.0, 0.0]], [[1.0, -3.0]])
    assert_close(grad, T([[-0.5, 1.5]]))  # -A_t / 2


def test_clip_stops_gradient_above_1_plus_eps_high_for_positive_advantage():
    # rho = 1.5, A = 1, eps_high .2: min(1.5, 1.2) = 1.2 -> loss -1.2, gradient 0
    out, grad = run([[LN(1.5)]], [[0.0]], [1.0])
    assert_close(out.loss, T(-1.2))
    assert_close(grad, T([[0.0]]))
    assert out.stats["loss/clip_frac"] == 1.0


def test_clip_stops_gradient_below_1_minus_eps_low_for_negative_advantage():
    # rho = .5, A = -1, eps_low .2: min(-.5, -.8) = -.8 -> loss .8, gradient 0
    out, grad = run([[LN(0.5)]], [[0.0]], [-1.0])
    assert_close(out.loss, T(0.8))
    assert_close(grad, T([[0.0]]))


def test_clip_keeps_gradient_on_the_pessimistic_side():
    # rho = .5 with A = +1: min(.5, .8) = .5 (unclipped) -> d(-rho)/dlogp = -.5
    # rho = 1.5 with A = -1: min(-1.5, -1.2) = -1.5 (unclipped) -> d(rho)/dlogp = 1.5
    _, grad = run([[LN(0.5)], [LN(1.5)]], [[0.0], [0.0]], [1.0, -1.0], c=cfg(loss_agg="seq_mean_token_mean"))
    assert_close(grad, T([[-0.25], [0.75]]))  # / 2 sequences


def test_clip_higher_uses_eps_high():
    # rho = 1.25, A = 1: clipped by eps_high .2 (loss -1.2, grad 0), not by eps_high .28 (loss -1.25)
    out, grad = run([[LN(1.25)]], [[0.0]], [1.0], c=cfg(eps_high=0.28))
    assert_close(out.loss, T(-1.25))
    assert_close(grad, T([[-1.25]]))
    out, grad = run([[LN(1.25)]], [[0.0]], [1.0], c=cfg(eps_high=0.2))
    assert_close(grad, T([[0.0]]))


def test_dual_clip_bounds_negative_advantage_loss_by_c_times_abs_a():
    # rho = 5, A = -1: PPO loss = -min(-5, -1.2) = 5; dual clip c = 3 bounds it to 3, gradient 0
    out, grad = run([[LN(5.0)]], [[0.0]], [-1.0])
    assert_close(out.loss, T(5.0))
    out, grad = run([[LN(5.0)]], [[0.0]], [-1.0], c=cfg(dual_clip=3.0))
    assert_close(out.loss, T(3.0))
    assert_close(grad, T([[0.0]]))
    assert out.stats["loss/dual_clip_frac"] == 1.0
    # rho = 2 < c: untouched, loss 2 and gradient rho * |A| = 2
    out, grad = run([[LN(2.0)]], [[0.0]], [-1.0], c=cfg(dual_clip=3.0))
    assert_close(out.loss, T(2.0))
    assert_close(grad, T([[2.0]]))
    # positive advantage is never dual clipped: rho = 5, A = 1 -> clipped to -1.2
    out, _ = run([[LN(5.0)]], [[0.0]], [1.0], c=cfg(dual_clip=3.0))
    assert_close(out.loss, T(-1.2))


def test_kl_in_loss_adds_beta_times_kl():
    # A = 0, beta .1, k3 at logp ln .5, ref ln .25 -> loss = .1 * 0.193147; stats keep the raw KL
    ref = T([[LN(0.25)]])
    out, grad = run([[LN(0.5)]], [[LN(0.5)]], [0.0], c=cfg(beta=0.1, kl_estimator="k3"), ref_logp=ref)
    assert_close(out.loss, T(0.1 * KL_BY_HAND["k3"]))
    assert out.stats["loss/kl"] == pytest.approx(KL_BY_HAND["k3"], rel=1e-5)
    # d k3 / d logp = 1 - exp(ref - logp) = 1 - .5 = .5 -> grad .05 > 0: descent moves logp toward ref
    assert_close(grad, T([[0.05]]))


def test_kl_is_reported_but_not_in_loss_when_in_reward_or_beta_zero():
    ref = T([[LN(0.25)]])
    for c in (cfg(beta=0.1, kl_in="reward"), cfg(beta=0.0)):
        out, grad = run([[LN(0.5)]], [[LN(0.5)]], [0.0], c=c, ref_logp=ref)
        assert_close(out.loss, T(0.0))
        assert_close(grad, T([[0.0]]))
        assert out.stats["loss/kl"] == pytest.approx(KL_BY_HAND["k3"], rel=1e-5)


def test_entropy_bonus():
    # A = 0, entropy_coef .01, entropy 2 -> loss = -.02
    out, _ = run([[0.0]], [[0.0]], [0.0], c=cfg(entropy_coef=0.01), entropy=T([[2.0]]))
    assert_close(out.loss, T(-0.02))
    assert out.stats["loss/entropy"] == pytest.approx(2.0)
    with pytest.raises(ValueError, match="entropy"):
        run([[0.0]], [[0.0]], [0.0], c=cfg(entropy_coef=0.01))


def test_stats_are_floats_over_masked_tokens_only():
    # ratios 1.5 (A>0, clipped), 1.0, 0.9, pad 100 (ignored): clip_frac 1/3, min .9, max 1.5
    lp = [[LN(1.5), 0.0], [LN(0.9), LN(100.0)]]
    out, _ = run(lp, [[0.0, 0.0], [0.0, 0.0]], [1.0, 1.0], [[True, True], [True, False]], ref_logp=T([[0.0] * 2] * 2))
    s = out.stats
    assert set(s) == {"loss/policy", "loss/kl", "loss/clip_frac", "loss/ratio_min", "loss/ratio_max"}
    assert all(isinstance(v, float) for v in s.values())
    assert s["loss/clip_frac"] == pytest.approx(1 / 3)
    assert s["loss/ratio_min"] == pytest.approx(0.9) and s["loss/ratio_max"] == pytest.approx(1.5)
    # policy loss: -(1.2 + 1.0 + .9)/3 = -3.1/3
    assert s["loss/policy"] == pytest.approx(-3.1 / 3, rel=1e-5)


@pytest.mark.parametrize("bad, err", [
    ({"mask": torch.ones(1, 2)}, TypeError),
    ({"mask": torch.ones(1, 3, dtype=torch.bool)}, ValueError),
    ({"adv": torch.ones(3)}, ValueError),
    ({"c": cfg(dual_clip=0.5)}, ValueError),
    ({"c": cfg(eps_low=1.0)}, ValueError),
])
def test_policy_loss_rejects_bad_input(bad, err):
    args = {"mask": torch.ones(1, 2, dtype=torch.bool), "adv": torch.ones(1), "c": cfg()}
    args.update(bad)
    with pytest.raises(err):
        params, beta = loss_args(args["c"], 2)
        policy_loss(torch.zeros(1, 2), torch.zeros(1, 2), args["adv"], args["mask"], params, beta=beta)


@pytest.mark.parametrize("override, key", [("algo.kl_in=nowhere", "algo.kl_in"), ("algo.dual_clip=0.5", "algo.dual_clip"),
                                           ("algo.eps_low=1.0", "algo.eps_low")])
def test_bad_loss_settings_are_config_errors_naming_the_key(override, key):
    with pytest.raises(ConfigError, match=key):
        load_config(None, [override])


# --- KL in the reward, adaptive KL, entropy, value loss ------------------------------------


def test_kl_penalized_rewards_by_hand():
    # k1 = logp - ref = [[.2, 0, -.1], [.5, 0, pad]], beta .1 -> -beta*k1 = [[-.02, 0, .01], [-.05, 0, 0]]
    # task scores [1, 0] land on the last real token: row 0 col 2, row 1 col 1
    logp = T([[0.2, 0.0, -0.1], [0.5, 0.0, 7.0]])
    mask = T([[True, True, True], [True, True, False]])
    r = kl_penalized_rewards(T([1.0, 0.0]), logp, torch.zeros(2, 3), mask, 0.1, "k1")
    assert_close(r, T([[-0.02, 0.0, 1.01], [-0.05, 0.0, 0.0]]))
    with pytest.raises(ValueError, match="at least one real token"):
        kl_penalized_rewards(T([1.0]), torch.zeros(1, 2), torch.zeros(1, 2), torch.zeros(1, 2, dtype=torch.bool), 0.1)


def test_adaptive_kl_update_by_hand():
    # target .01, horizon 10: kl .02 -> e = clip(1, ±.2) = .2 -> beta .1 * (1 + .2/10) = .102
    assert adaptive_kl_update(0.1, 0.02, 0.01, 10) == pytest.approx(0.102)
    # kl .009 -> e = -.1 -> .1 * (1 - .01) = .099; kl == target -> unchanged
    assert adaptive_kl_update(0.1, 0.009, 0.01, 10) == pytest.approx(0.099)
    ctl = AdaptiveKL(beta=0.1, target=0.01, horizon=10)
    assert ctl.update(0.01) == pytest.approx(0.1)
    assert ctl.update(0.02) == pytest.approx(0.102) and ctl.beta == pytest.approx(0.102)
    with pytest.raises(ValueError, match="target"):
        adaptive_kl_update(0.1, 0.02, 0.0, 10)


def test_token_entropy_is_stable_and_matches_definition():
    # uniform over 4 -> ln 4; a certain token (others -inf) -> 0, not NaN; huge logits don't overflow
    logits = T([[[0.0, 0.0, 0.0, 0.0], [5.0, -math.inf, -math.inf, -math.inf], [1e4, 1e4, -1e4, -1e4]]])
    assert_close(token_entropy(logits), T([[LN(4), 0.0, LN(2)]]))
    g = torch.randn(2, 3, 11, generator=torch.Generator().manual_seed(0))
    assert_close(token_entropy(g), torch.distributions.Categorical(logits=g).entropy())


def test_value_loss_by_hand():
    # V 1, old V .5, R 2, clip .2: unclipped (1-2)^2 = 1; clipped V = .7 -> (.7-2)^2 = 1.69
    # loss = .5 * max(1, 1.69) = .845 (the pad token is ignored)
    v = T([[1.0, 50.0]])
    loss = value_loss(v, T([[0.5, 0.0]]), T([[2.0, 0.0]]), T([[True, False]]), clip=0.2)
    assert_close(loss, T(0.845))


def test_token_weights_scale_only_the_policy_term():
    # One row, two tokens, ratio 1 (logp == old), A = +1, weights [0.5, 2], beta 0.2, k1 KL.
    # Policy term per token = -A * w = [-0.5, -2.0]; KL k1 = -(ref - logp) = [0.1, 0.3].
    # per token = [-0.5 + 0.2*0.1, -2.0 + 0.2*0.3] = [-0.48, -1.94]; token_mean = -1.21.
    logp = torch.tensor([[-1.0, -2.0]])
    ref = torch.tensor([[-1.1, -2.3]])
    mask = torch.ones(1, 2, dtype=torch.bool)
    params = LossParams(loss_agg="token_mean", kl_estimator="k1", norm_len=2)
    out = policy_loss(logp, logp, torch.tensor([1.0]), mask, params, ref_logp=ref, beta=0.2,
                      token_weights=torch.tensor([[0.5, 2.0]]))
    torch.testing.assert_close(out.loss, torch.tensor(-1.21))


# --- GSPO: the sequence-level ratio (Zheng et al. 2025) ------------------------------------------

# Two rows, old_logp 0, so logp is the log ratio; row 0 has 2 real tokens (pads 3.0 are ignored),
# row 1 has 4. A = [+1, -1], eps .2/.2, seq_mean_token_mean over 2 rows.
GSPO_LOGP = [[LN(1.21), 0.0, 3.0, 3.0], [LN(0.25), 0.0, 0.0, 0.0]]
GSPO_MASK = [[True, True, False, False], [True, True, True, True]]


def test_sequence_ratio_is_the_length_normalised_sequence_ratio():
    # row 0: s = exp((ln 1.21 + 0) / 2) = 1.1; row 1: s = exp(ln .25 / 4) = .25 ** .25 = 0.707107;
    # every token of a row gets its row's ratio; a row without real tokens gets 1 (log ratio 0)
    from reasoner.losses import RATIO_LEVELS

    log_s = RATIO_LEVELS.get("sequence")(T(GSPO_LOGP + [[9.0] * 4]), torch.zeros(3, 4),
                                         T(GSPO_MASK + [[False] * 4]))
    assert_close(log_s.exp(), T([[1.1] * 4, [0.25 ** 0.25] * 4, [1.0] * 4]))


def test_gspo_clips_and_differentiates_per_sequence():
    # row 0: s = 1.1 < 1.2 unclipped -> loss -1.1; d(-s)/dlogp_t = -s * (1/|y|) = -.55 per real token,
    #        / 2 rows = -.275 (the pads: 0)
    # row 1: s = .707107 < .8 with A = -1 -> clipped: loss -min(-.707107, -.8) = .8, gradient 0
    # loss = (-1.1 + .8) / 2 = -.15; clip_frac over the 6 real tokens = 4/6
    out, grad = run(GSPO_LOGP, [[0.0] * 4] * 2, [1.0, -1.0], GSPO_MASK,
                    c=cfg(loss_agg="seq_mean_token_mean", ratio_level="sequence"))
    assert_close(out.loss, T(-0.15))
    assert_close(grad, T([[-0.275, -0.275, 0.0, 0.0], [0.0] * 4]))
    assert out.stats["loss/clip_frac"] == pytest.approx(4 / 6)
    assert out.stats["loss/ratio_min"] == pytest.approx(0.25 ** 0.25, rel=1e-5)
    assert out.stats["loss/ratio_max"] == pytest.approx(1.1, rel=1e-5)


def test_token_ratio_on_the_same_rows_differs():
    # token level on the same tensors: row 0 ratios [1.21, 1]: 1.21 clipped at 1.2 (grad 0), 1 -> -1
    #   (grad -1/2 per row mean, /2 rows = -.25); row mean -1.1
    # row 1 ratios [.25, 1, 1, 1], A = -1: .25 clipped at .8 (loss .8, grad 0), the others loss 1 and
    #   grad +1/4/2 = .125; row mean (.8 + 3) / 4 = .95.  loss = (-1.1 + .95) / 2 = -.075
    out, grad = run(GSPO_LOGP, [[0.0] * 4] * 2, [1.0, -1.0], GSPO_MASK, c=cfg(loss_agg="seq_mean_token_mean"))
    assert_close(out.loss, T(-0.075))
    assert_close(grad, T([[0.0, -0.25, 0.0, 0.0], [0.0, 0.125, 0.125, 0.125]]))


@pytest.mark.parametrize("agg", ["seq_mean_token_mean", "token_mean", "seq_mean_token_sum_norm"])
def test_on_policy_sequence_and_token_ratios_give_the_same_loss_and_gradient(agg):
    # ratio 1 everywhere: each token's gradient is -A / its aggregation weight, whatever the level
    g = torch.Generator().manual_seed(0)
    lp = -torch.rand(4, 5, generator=g)
    mask = torch.arange(5)[None] < torch.tensor([5, 1, 3, 2])[:, None]
    adv = torch.randn(4, generator=g)
    got = []
    for level in ("token", "sequence"):
        x = lp.clone().requires_grad_(True)
        out = policy_loss(x, x.detach(), adv, mask, LossParams(loss_agg=agg, norm_len=5, ratio_level=level))
        out.loss.backward()
        got.append((out.loss.detach(), x.grad))
    assert_close(got[0][0], got[1][0])
    assert_close(got[0][1], got[1][1])


# --- CISPO: clipped, detached IS weight times the log-prob (MiniMax-M1, Chen et al. 2025) -------------


def test_cispo_by_hand():
    # one row, 3 tokens, per-token A = [+1, +1, -1], eps_high .5 (weight bound 1.5), token_mean:
    #   t0: logp ln .5, old ln .25 -> rho 2 -> w = min(2, 1.5) = 1.5; loss -1.5 * 1 * ln .5 = 1.039721
    #   t1: logp = old = ln .5   -> w 1;                        loss -1 * 1 * ln .5 = 0.693147
    #   t2: logp ln .2, old ln .8 -> rho .25 (no lower bound) -> w .25; loss -.25 * -1 * ln .2 = -0.402359
    #   loss = (1.039721 + 0.693147 - 0.402359) / 3 = 0.443503
    #   d/dlogp_t = -w_t A_t / 3 = [-.5, -.333333, .083333] (w is detached); clip_frac 1/3 (t0)
    logp, old = [[LN(0.5), LN(0.5), LN(0.2)]], [[LN(0.25), LN(0.5), LN(0.8)]]
    out, grad = run(logp, old, [[1.0, 1.0, -1.0]], c=cfg(policy_loss="cispo", eps_high=0.5))
    assert_close(out.loss, T(0.443503), atol=1e-6, rtol=1e-6)
    assert_close(grad, T([[-0.5, -1 / 3, 0.25 / 3]]))
    assert out.stats["loss/clip_frac"] == pytest.approx(1 / 3)
    # the clipped surrogate zeroes t0 (rho 2 > 1.2, A > 0) and t2 (rho .25 < .8, A < 0); t1: -1/3
    _, ppo_grad = run(logp, old, [[1.0, 1.0, -1.0]], c=cfg(eps_high=0.5))
    assert_close(ppo_grad, T([[0.0, -1 / 3, 0.0]]))


def test_cispo_on_policy_gradient_equals_the_clipped_surrogate():
    # rho = 1: d/dlogp of -sg(1) A logp is -A, of -rho A is -rho A = -A
    g = torch.Generator().manual_seed(1)
    lp, adv = -torch.rand(3, 4, generator=g), torch.randn(3, generator=g)
    mask = torch.ones(3, 4, dtype=torch.bool)
    grads = []
    for kind in ("ppo_clip", "cispo"):
        x = lp.clone().requires_grad_(True)
        policy_loss(x, x.detach(), adv, mask, LossParams(loss_agg="token_mean", policy_loss=kind)).loss.backward()
        grads.append(x.grad)
    assert_close(grads[0], grads[1])


def test_cispo_with_sequence_ratio_uses_one_weight_per_row():
    # row of 2 tokens, logp - old = [ln 4, 0] -> s = exp(ln 4 / 2) = 2, bound 1.5 -> w 1.5 on both;
    # A = 1, token_mean: d/dlogp = -1.5 / 2 = -.75 each
    _, grad = run([[LN(0.4), LN(0.3)]], [[LN(0.1), LN(0.3)]], [1.0],
                  c=cfg(policy_loss="cispo", ratio_level="sequence", eps_high=0.5))
    assert_close(grad, T([[-0.75, -0.75]]))


def test_dual_clip_needs_the_clipped_surrogate():
    with pytest.raises(ValueError, match="ppo_clip"):
        LossParams(policy_loss="cispo", dual_clip=3.0)
    with pytest.raises(ConfigError, match="algo.dual_clip"):
        load_config(None, ["algo.policy_loss=cispo", "algo.dual_clip=3"])


@pytest.mark.parametrize("override, fragment", [
    ("algo.policy_loss=ppo", "choose one of: cispo, ppo_clip"),
    ("algo.ratio_level=word", "choose one of: sequence, token"),
])
def test_unknown_loss_kind_or_ratio_level_lists_the_choices(override, fragment):
    with pytest.raises(ConfigError, match=fragment):
        load_config(None, [override])


def test_token_weights_are_reported():
    # weights [.5, 0] on two real tokens: mean .25, one of two is 0
    out = policy_loss(torch.zeros(1, 2), torch.zeros(1, 2), torch.ones(1), torch.ones(1, 2, dtype=torch.bool),
                      LossParams(norm_len=2), token_weights=T([[0.5, 0.0]]))
    assert out.stats["loss/is_weight_mean"] == pytest.approx(0.25)
    assert out.stats["loss/is_zero_frac"] == pytest.approx(0.5)
