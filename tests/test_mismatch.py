"""Engine/trainer mismatch weights (reasoner.mismatch) against hand-derived values."""
import math

import pytest
import torch
from torch.testing import assert_close

from reasoner.config import ConfigError, load_config
from reasoner.mismatch import IS_LEVELS, IS_MODES, Correction, is_weights

T = torch.tensor
E = math.exp
# two rows, 2 real tokens each (the third is padding, with a junk sampler log-prob)
TRAINER = T([[-1.0, -2.0, -0.5], [-1.0, -1.0, 0.0]])
SAMPLER = T([[-1.5, -1.0, -3.0], [-1.2, -1.1, 9.0]])
MASK = T([[True, True, False], [True, True, False]])
# trainer - sampler on the real tokens: row 0 [.5, -1.0], row 1 [.2, .1]
#   token weights:    row 0 [e^.5 = 1.648721, e^-1 = 0.367879], row 1 [e^.2 = 1.221403, e^.1 = 1.105171]
#   sequence weights: row 0 e^(.5 - 1) = e^-.5 = 0.606531, row 1 e^(.2 + .1) = e^.3 = 1.349859
BY_HAND = {
    # cap 1.5: truncate = min(w, 1.5); mask = w inside [1/1.5 = .666667, 1.5], else 0
    ("token", "truncate"): [[1.5, E(-1.0), 0.0], [E(0.2), E(0.1), 0.0]],
    ("token", "mask"): [[0.0, 0.0, 0.0], [E(0.2), E(0.1), 0.0]],  # 1.648721 > 1.5, .367879 < .666667
    ("sequence", "truncate"): [[E(-0.5), E(-0.5), 0.0], [E(0.3), E(0.3), 0.0]],  # both under the cap
    ("sequence", "mask"): [[0.0, 0.0, 0.0], [E(0.3), E(0.3), 0.0]],  # .606531 < .666667: row 0 leaves
}


def test_every_level_and_mode_has_a_hand_value():
    assert {(lv, md) for lv in IS_LEVELS for md in IS_MODES} == set(BY_HAND)


@pytest.mark.parametrize("level, mode", sorted(BY_HAND))
def test_weights_by_hand(level, mode):
    got = is_weights(TRAINER, SAMPLER, MASK, 1.5, IS_LEVELS.get(level), IS_MODES.get(mode))
    assert_close(got, T(BY_HAND[(level, mode)]))


def test_sequence_truncation_caps_the_whole_row():
    # cap 1.2: row 1's e^.3 = 1.349859 -> 1.2 on both tokens; row 0 (.606531) is untouched
    got = is_weights(TRAINER, SAMPLER, MASK, 1.2, IS_LEVELS.get("sequence"), IS_MODES.get("truncate"))
    assert_close(got, T([[E(-0.5), E(-0.5), 0.0], [1.2, 1.2, 0.0]]))


def test_long_sequences_do_not_overflow():
    # 1000 tokens, +1 each: log w = 1000, exp would be inf; truncate gives the cap, mask gives 0; -1000: 0 both
    trainer = torch.cat([torch.zeros(1, 1000), torch.zeros(1, 1000)])
    sampler = torch.cat([-torch.ones(1, 1000), torch.ones(1, 1000)])
    mask = torch.ones(2, 1000, dtype=torch.bool)
    seq = IS_LEVELS.get("sequence")
    assert_close(is_weights(trainer, sampler, mask, 2.0, seq, IS_MODES.get("truncate"))[:, 0], T([2.0, 0.0]))
    assert_close(is_weights(trainer, sampler, mask, 2.0, seq, IS_MODES.get("mask"))[:, 0], T([0.0, 0.0]))


def test_correction_is_built_once_from_the_config():
    cfg = load_config(None, ["sampling.vllm_tis_cap=1.5", "sampling.vllm_is_level=sequence",
                             "sampling.vllm_is_mode=mask"])
    corr = Correction.of(cfg.sampling)
    assert corr.level is IS_LEVELS.get("sequence") and corr.bound is IS_MODES.get("mask") and corr.cap == 1.5
    assert_close(corr(TRAINER, SAMPLER, MASK), T(BY_HAND[("sequence", "mask")]))
    assert Correction.of(load_config(None, []).sampling) is None  # vllm_tis_cap 0: off


@pytest.mark.parametrize("override, fragment", [
    ("sampling.vllm_is_level=word", "choose one of: sequence, token"),
    ("sampling.vllm_is_mode=clip", "choose one of: mask, truncate"),
    ("sampling.vllm_tis_cap=0.5", "sampling.vllm_tis_cap=0.5 must be 0 (off) or > 1"),
])
def test_bad_settings_name_the_key(override, fragment):
    with pytest.raises(ConfigError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        load_config(None, [override])
