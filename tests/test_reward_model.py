"""Reward models (reasoner.reward_model): batched scoring, normalisation, verdicts, config errors, a run."""
from __future__ import annotations

import json

import pytest
import torch

from reasoner import reward_model as RM
from reasoner import rewards, verifiers
from reasoner.config import ConfigError, load_config
from reasoner.types import Problem


@pytest.fixture(scope="module")
def rm_dir(tmp_path_factory):
    """A randomly initialised 2-layer Qwen2 classifier (one logit) with the tiny char tokenizer."""
    from transformers import Qwen2Config, Qwen2ForSequenceClassification

    from reasoner.models.tiny import build_tokenizer

    tok = build_tokenizer()
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=128, num_labels=1,
                      pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=None)
    torch.manual_seed(0)
    model = Qwen2ForSequenceClassification(cfg)
    torch.nn.init.normal_(model.score.weight, std=1.0)  # scores spread well beyond sigmoid's linear part
    path = tmp_path_factory.mktemp("rm")
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


PROBLEMS = [Problem(id=str(i), prompt=f"{a}+{b}=", answer=str(a + b), source="synthetic")
            for i, (a, b) in enumerate([(1, 2), (34, 56), (7, 80), (12, 12)])]
COMPLETIONS = ["3", "90", "1234567", ""]


def test_batched_scores_equal_one_by_one(rm_dir):
    rm = RM.load(str(rm_dir), "cpu", norm="none", batch_size=3)  # 3: two forwards, one padded
    normed, raw = rm.scores(COMPLETIONS, PROBLEMS)
    one = torch.cat([rm.scores([c], [p])[1] for c, p in zip(COMPLETIONS, PROBLEMS)])
    assert raw.shape == (4,) and torch.equal(normed, raw)
    torch.testing.assert_close(raw, one, atol=1e-5, rtol=1e-5)
    assert len(set(raw.tolist())) == 4  # the inputs are told apart


def test_model_loaded_once_per_path(rm_dir):
    a, b = RM.load(str(rm_dir)), RM.load(str(rm_dir), norm="tanh")
    assert a.model is b.model and a.tokenizer is b.tokenizer


@pytest.mark.parametrize("norm,fn", [("sigmoid", lambda x: 1 / (1 + torch.exp(-x))), ("tanh", torch.tanh),
                                     ("none", lambda x: x)])
def test_normalisation_by_hand(rm_dir, norm, fn):
    normed, raw = RM.load(str(rm_dir), norm=norm).scores(COMPLETIONS, PROBLEMS)
    torch.testing.assert_close(normed, fn(raw))


def test_verdict_has_raw_score_and_threshold(rm_dir):
    rm = RM.load(str(rm_dir), norm="sigmoid", threshold=0.5)
    normed, raw = rm.scores(COMPLETIONS, PROBLEMS)
    for v, s, r in zip(rm.verdicts(COMPLETIONS, PROBLEMS), normed, raw):
        assert v.score == pytest.approx(float(s)) and v.status == ("correct" if s >= 0.5 else "wrong")
        assert float(v.detail.removeprefix("raw=")) == pytest.approx(float(r), rel=1e-5)


def test_registered_reward_and_verifier_use_the_bound_model(rm_dir):
    rm = RM.load(str(rm_dir), norm="sigmoid")
    RM.bind(rm)
    try:
        total, parts = rewards.extra_rewards(COMPLETIONS, PROBLEMS, {"reward_model": 2.0, "length": 1.0})
        normed = rm.scores(COMPLETIONS, PROBLEMS)[0]
        torch.testing.assert_close(parts["reward_model"], normed)
        torch.testing.assert_close(total, 2.0 * normed + parts["length"])
        probs = [Problem(p.id, p.prompt, p.answer, verifier="reward_model") for p in PROBLEMS]
        verdicts = verifiers.score_all(COMPLETIONS, probs)
        assert [v.score for v in verdicts] == pytest.approx(normed.tolist())
        assert all(v.detail.startswith("raw=") for v in verdicts)
    finally:
        RM.bind(None)
    with pytest.raises(ValueError, match="algo.reward_model"):
        RM.bound()


def test_config_errors_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match="algo.reward_model="):
        load_config(None, [f"algo.reward_model={tmp_path / 'nowhere'}"])
    with pytest.raises(ConfigError, match="algo.reward_model is empty"):
        load_config(None, ["algo.reward_weights={reward_model: 1.0}"])
    with pytest.raises(ConfigError, match="algo.reward_model is empty"):
        load_config(None, ["algo.reward_model_verifier=true"])
    with pytest.raises(ConfigError, match="algo.reward_model_norm"):
        load_config(None, ["algo.reward_model_norm=softmax"])
    with pytest.raises(ValueError, match="algo.reward_model="):
        RM.load(str(tmp_path / "nowhere"))


@pytest.mark.parametrize("source", ["algo.reward_weights={reward_model: 1.0}", "algo.reward_model_verifier=true"])
def test_four_model_run_logs_reward_model_and_critic(run_args, rm_dir, tmp_path, keep_threads, source):
    """Policy + reference (beta > 0, KL in the reward) + reward model + critic (gae): a few steps, the
    reward model beside the math verifier (an extra reward) or instead of it (the training verifier)."""
    from reasoner.trainer import train

    cfg = load_config(None, run_args(f"algo.reward_model={rm_dir}", source, "algo.advantage=gae", "algo.kl_in=reward", "algo.beta=0.05",
                                     "run.reference_process=inline", "run.steps=2", "run.eval_every=0",
                                     "run.save_every=0"))
    try:
        summary = train(cfg)
    finally:
        RM.bind(None)
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    step = [r for r in rows if r["step"] == 1][0]
    if "weights" in source:
        assert 0 <= step["reward/reward_model"] <= 1
    else:  # the verifier's score is the reward model's; held-out accuracy is still the math verifier's
        assert 0 < step["reward/mean"] < 1 and step["verify/correct_frac"] + step["verify/wrong_frac"] == 1
        assert 0 <= summary["heldout_accuracy_after"] <= 1
        samples = [json.loads(x) for x in (tmp_path / "run" / "samples.jsonl").read_text().splitlines()]
        assert "raw=" in json.dumps(samples[0])
    assert any(k.startswith("critic/") for k in step), sorted(step)
    assert "kl/beta" in step and "kl/mean" in step and summary["steps"] == 2


@pytest.mark.slow
def test_rlhf_recipe_improves_reward_model_score_and_heldout_accuracy(tmp_path, keep_threads):
    """The four-model recipe on the embedded default, the reward model beside the math verifier:
    the reward-model score (mean of the first vs the last 20 steps) and held-out accuracy rise.
    About 8 minutes on 2 CPU cores (the reward model, then 300 steps)."""
    import subprocess
    import sys
    from pathlib import Path

    from reasoner.trainer import train

    root = Path(__file__).resolve().parents[1]
    rm = tmp_path / "rm"
    subprocess.run([sys.executable, str(root / "scripts" / "train_reward_model.py"), "--out", str(rm),
                    "--lr", "1e-3", "--steps", "500", "--batch-size", "256", "--pairs", "6000",
                    "--policy-samples", "6000"], check=True, cwd=root)
    cfg = load_config(root / "recipes" / "tiny_rlhf_ppo.yaml",
                      [f"algo.reward_model={rm}", "algo.reward_model_verifier=false",
                       "algo.reward_weights={reward_model: 1.0}", f"run.out_dir={tmp_path / 'run'}",
                       "run.progress=false", "run.threads=2"])
    try:
        summary = train(cfg)
    finally:
        RM.bind(None)
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    scores = [r["reward/reward_model"] for r in rows if "reward/reward_model" in r]
    assert sum(scores[-20:]) / 20 > sum(scores[:20]) / 20
    assert summary["heldout_accuracy_after"] > summary["heldout_accuracy_before"]
