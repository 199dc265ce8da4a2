"""Named presets: each sets the recipe its paper describes, user values win, each one trains."""
from __future__ import annotations

import json

import pytest

from reasoner.config import Config, ConfigError, load_config
from reasoner.presets import PRESETS

# What each recipe means, written out by hand from its paper (not read back from presets.py):
EXPECTED = {
    # DeepSeekMath GRPO: group-std advantage, per-sequence token mean, k3 KL in the loss, clip 0.2
    "grpo": {"advantage": "grpo", "loss_agg": "seq_mean_token_mean", "kl_estimator": "k3", "kl_in": "loss",
             "eps_low": 0.2, "eps_high": 0.2},
    # Dr. GRPO: no std, token sum / constant length, no KL
    "dr_grpo": {"advantage": "dr_grpo", "loss_agg": "seq_mean_token_sum_norm", "beta": 0.0},
    # DAPO: clip-higher 0.2/0.28, token mean, dynamic sampling, soft overlong punishment, no KL
    "dapo": {"advantage": "grpo", "loss_agg": "token_mean", "beta": 0.0, "eps_low": 0.2, "eps_high": 0.28,
             "dynamic_sampling": True, "overlong": "soft"},
    # RLOO: leave-one-out baseline, k3 KL in the loss
    "rloo": {"advantage": "rloo", "kl_estimator": "k3", "kl_in": "loss"},
    # JustRL: clip 0.2/0.28, no KL, no length penalty, no dynamic sampling, constant lr
    "justrl": {"beta": 0.0, "eps_low": 0.2, "eps_high": 0.28, "overlong": "none", "dynamic_sampling": False},
    # GSPO (v2, sec. 5.1): sequence-level ratio clipped at 3e-4 / 4e-4, 4 minibatches per rollout, no KL,
    # per-sequence mean (TRL: loss_type="grpo", importance_sampling_level="sequence")
    "gspo": {"advantage": "grpo", "policy_loss": "ppo_clip", "ratio_level": "sequence",
             "loss_agg": "seq_mean_token_mean", "beta": 0.0, "eps_low": 3e-4, "eps_high": 4e-4, "minibatches": 4},
    # CISPO (MiniMax-M1): detached IS weight bounded above only (TRL/ScaleRL bound 5 = 1 + 4), token mean, no KL
    "cispo": {"advantage": "grpo", "policy_loss": "cispo", "ratio_level": "token", "loss_agg": "token_mean",
              "beta": 0.0, "eps_high": 4.0},
}


def test_every_preset_is_pinned():
    assert sorted(EXPECTED) == PRESETS.names()


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_preset_sets_what_it_says(name):
    cfg = load_config(None, [f"algo.preset={name}"])
    assert cfg.algo.preset == name
    for key, value in EXPECTED[name].items():
        assert getattr(cfg.algo, key) == value, f"{name}: algo.{key}"
    if name == "justrl":
        assert cfg.optim.schedule == "constant"
    # every key a preset sets is a real config key, applied as given
    for dotted, value in PRESETS.get(name).items():
        section, field = dotted.split(".")
        assert getattr(getattr(cfg, section), field) == value, dotted


def test_no_preset_means_the_plain_defaults():
    assert load_config(None, []) == Config()
    assert load_config(None, ["algo.preset=none"]).algo.advantage == Config().algo.advantage


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_explicit_user_values_win(name, tmp_path):
    # command line beats the preset, whatever the order of the overrides
    cfg = load_config(None, ["algo.eps_high=0.33", f"algo.preset={name}", "algo.beta=0.01", "algo.overlong=mask"])
    assert (cfg.algo.eps_high, cfg.algo.beta, cfg.algo.overlong) == (0.33, 0.01, "mask")
    # a YAML file beats the preset too, and the command line beats the file
    y = tmp_path / "c.yaml"
    y.write_text(f"algo:\n  preset: {name}\n  advantage: batch_mean\n  eps_low: 0.1\n")
    cfg = load_config(y, ["algo.eps_low=0.15"])
    assert cfg.algo.advantage == "batch_mean" and cfg.algo.eps_low == 0.15
    # untouched keys still come from the preset
    for key, value in EXPECTED[name].items():
        if key not in ("advantage", "eps_low"):
            assert getattr(cfg.algo, key) == value, key


def test_unknown_preset_lists_the_valid_ones():
    with pytest.raises(ConfigError, match="cispo, dapo, dr_grpo, grpo, gspo, justrl, rloo"):
        load_config(None, ["algo.preset=ppo9"])


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_short_run_with_each_preset(name, tiny_model_dir, tmp_path):
    from reasoner.trainer import train

    cfg = load_config(None, [f"algo.preset={name}", f"model.name={tiny_model_dir}", f"run.out_dir={tmp_path}",
                             "run.progress=false", "run.steps=2", "data.eval_size=4", "run.batch_size=2",
                             "sampling.group_size=2", "sampling.max_new_tokens=4", "run.threads=1",
                             "data.synthetic_size=64", "run.log_samples_every=0", "algo.overlong_buffer=2"])
    summary = train(cfg)
    assert 0.0 <= summary["heldout_accuracy_after"] <= 1.0
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 1, 2]
    assert all(r["update/skipped"] == 0 for r in rows[1:])
    assert ("loss/kl" in rows[1]) == (cfg.algo.beta > 0)  # a reference model only with KL
    assert ("dynamic/kept_groups" in rows[1]) == cfg.algo.dynamic_sampling
    assert ("reward/overlong" in rows[1]) == (cfg.algo.overlong == "soft")
