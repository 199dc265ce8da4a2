"""Our advantages and policy losses against TRL's own GRPOTrainer / RLOOTrainer code paths.

The cases are ``scripts/crosscheck_trl.py``'s (run it for a table): a real TRL trainer around a
throw-away random model computes its loss on fixed random tensors, and its advantages on fixed
rewards; the loss value and d loss / d logp must equal ours to 1e-6. Skipped without TRL.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

trl = pytest.importorskip("trl")

TOL = 1e-6
B, G, T = 4, 6, 7


def _load_script():
    path = Path(__file__).resolve().parents[1] / "scripts" / "crosscheck_trl.py"
    spec = importlib.util.spec_from_file_location("crosscheck_trl", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


xc = _load_script()


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> str:
    """A directory holding the random tiny model as ``tiny/`` (TRL trainers write their output beside it)."""
    xc.quiet_transformers()
    out = str(tmp_path_factory.mktemp("trl"))
    xc.save_tiny_model(out)
    return out


@pytest.fixture(scope="module")
def batch() -> dict[str, torch.Tensor]:
    return xc.random_batch(B * G, T, torch.Generator().manual_seed(1))


def test_the_random_batch_exercises_every_clip(batch):
    # token ratios beyond both PPO bounds and cispo's 1.5; sequence ratios beyond GSPO's 3e-4 / 4e-4 and 0.2
    m = batch["mask"]
    ratio = (batch["logp"] - batch["old"]).exp()[m]
    assert (ratio > 1.5).any() and (ratio < 0.8).any()
    seq = ((batch["logp"] - batch["old"]) * m).sum(-1) / m.sum(-1)
    assert (seq.exp() > 1.2).any() and (seq.exp() < 0.8).any()
    assert (batch["adv"] > 0).any() and (batch["adv"] < 0).any()


@pytest.mark.parametrize("case", xc.loss_cases(), ids=lambda c: " ".join(c.label.split()))
def test_policy_loss_and_gradient_equal_trl(case, batch, tiny_dir):
    value, grad = xc.compare_loss(case, batch, tiny_dir, G)
    assert value <= TOL and grad <= TOL, f"{case.label}: |loss diff| {value:.3e}, max |grad diff| {grad:.3e}"


@pytest.mark.parametrize("kind, overrides, ours", xc.ADV_PAIRS, ids=[p[2] for p in xc.ADV_PAIRS])
def test_advantages_equal_trl(kind, overrides, ours, tiny_dir):
    rewards = xc.random_rewards(0, B, G)
    diff = xc.compare_advantages(kind, overrides, ours, rewards, tiny_dir)
    # grpo: TRL divides by std + 1e-4, we by std + 1e-6; that alone predicts the whole gap
    allowed = xc.grpo_epsilon_gap(rewards) if ours == "grpo" else 0.0
    assert diff <= allowed + TOL, f"{ours}: max |diff| {diff:.3e} (allowed {allowed:.3e})"
