"""Durable runs: a SIGKILLed run resumed with ``--resume auto`` replays the uninterrupted run
exactly; non-finite losses or gradients skip the update and K in a row stop the run with a
checkpoint of the last good state; checkpoints are atomic and pruned to the last K."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from reasoner import checkpoint
from reasoner.cli import main as cli_main
from reasoner.config import load_config
from reasoner.trainer import train

ROOT = Path(__file__).resolve().parents[1]
WALL_CLOCK = ("time/", "tokens_per_s")  # the only metrics allowed to differ between two runs


pytestmark = pytest.mark.usefixtures("keep_threads")  # conftest: torch threads restored after each test


def _args(model_dir, out, *extra):
    return [f"model.name={model_dir}", f"run.out_dir={out}", "run.progress=false", "run.threads=1",
            "run.batch_size=2", "sampling.group_size=4", "sampling.max_new_tokens=4", "data.eval_size=4",
            "data.synthetic_size=64", "run.eval_every=2", "run.log_samples_every=0", "run.seed=3",
            "algo.minibatches=2", "optim.lr=3e-3",
            "algo.reward_weights={length: 1.0}", *extra]  # rewards that differ within groups: updates happen


def _rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _comparable(row: dict) -> dict:
    return {k: v for k, v in row.items() if not k.startswith(WALL_CLOCK)}


def _kill_after(cmd: list[str], metrics: Path, step: int, timeout: float = 240.0) -> int:
    """Start ``cmd``; SIGKILL it as soon as metrics.jsonl holds the row of ``step``."""
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if metrics.is_file() and any(json.loads(x)["step"] >= step for x in metrics.read_text().splitlines() if x):
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    rc = proc.wait(timeout=30)
    assert rc == -signal.SIGKILL, f"the run ended by itself (rc {rc}): {proc.stderr.read().decode()[-2000:]}"
    return rc


def test_sigkill_then_resume_auto_matches_uninterrupted_run(tiny_model_dir, tmp_path):
    steps = ["run.steps=8", "run.save_every=2", "run.keep_checkpoints=1"]
    ref_dir, cut_dir = tmp_path / "straight", tmp_path / "killed"
    train(load_config(None, _args(tiny_model_dir, ref_dir, *steps)))

    # killed once step 3 is logged, mid-run: the newest complete checkpoint is step 2 (rows 3+ are lost),
    # or on a slow poll step 4 or 6; the resumed run replays what the kill lost
    cmd = [sys.executable, "-m", "reasoner", "train", *_args(tiny_model_dir, cut_dir, *steps)]
    _kill_after(cmd, cut_dir / "metrics.jsonl", step=3)
    assert [c.name for c in checkpoint.list_checkpoints(cut_dir)] in (["step-0000002"], ["step-0000004"],
                                                                      ["step-0000006"])

    assert cli_main(["train", "--resume", "auto", *_args(tiny_model_dir, cut_dir, *steps)]) == 0
    ref, got = _rows(ref_dir), _rows(cut_dir)
    assert [r["step"] for r in got] == [r["step"] for r in ref] == list(range(9))
    for a, b in zip(ref, got):
        assert _comparable(a) == _comparable(b), f"step {a['step']} differs after resume"
    assert any(r["update/grad_norm"] > 0 for r in got[1:])  # updates really happened
    straight = torch.load(ref_dir / "checkpoints/step-0000008" / checkpoint.STATE, weights_only=False)
    resumed = torch.load(cut_dir / "checkpoints/step-0000008" / checkpoint.STATE, weights_only=False)
    for sa, sb in zip(straight["optim"]["optimizer"]["state"].values(), resumed["optim"]["optimizer"]["state"].values()):
        torch.testing.assert_close(sa["exp_avg"], sb["exp_avg"], rtol=0, atol=0)


def test_non_finite_losses_skip_updates_then_stop_with_a_checkpoint(tiny_model_dir, tmp_path, monkeypatch):
    import reasoner.update as update

    real = update.policy_loss

    def nan_loss(*args, **kwargs):
        out = real(*args, **kwargs)
        return out._replace(loss=out.loss * float("nan"))

    monkeypatch.setattr(update, "policy_loss", nan_loss)
    run = tmp_path / "nan"
    cfg = load_config(None, _args(tiny_model_dir, run, "run.steps=6", "run.save_every=0", "run.max_bad_steps=2"))
    with pytest.raises(RuntimeError, match=r"2 consecutive non-finite losses or gradients at step 2;.*checkpoint"):
        train(cfg)
    rows = _rows(run)
    assert [r["update/skipped"] for r in rows[1:]] == [2, 2]  # 2 minibatches skipped per step
    (ckpt,) = checkpoint.list_checkpoints(run)
    assert ckpt.name == "step-0000002"
    from transformers import AutoModelForCausalLM

    before = AutoModelForCausalLM.from_pretrained(tiny_model_dir).state_dict()
    after = AutoModelForCausalLM.from_pretrained(ckpt).state_dict()
    for k, v in before.items():  # the last good state is the initial one: no update was applied
        torch.testing.assert_close(after[k], v, rtol=0, atol=0)


def test_nan_gradient_skips_only_that_update(tiny_model_dir):
    from reasoner.models import load_model
    from reasoner.types import Rollout
    from reasoner.optim import Optimizer
    from reasoner.update import UpdateBatch, UpdateParams, ppo_update

    cfg = load_config(None, [f"model.name={tiny_model_dir}", "sampling.max_new_tokens=3"])
    model, _ = load_model(cfg.model)
    opt = Optimizer(model, cfg.optim, 1, make=lambda ps: torch.optim.SGD(ps, lr=0.1))
    roll = _rollout(Rollout)
    batch = UpdateBatch(roll, torch.tensor([1.0, -1.0]))
    p = model.get_input_embeddings().weight
    start = p.detach().clone()
    hook = p.register_hook(lambda g: g * float("nan"))
    stats = ppo_update(model, opt, batch, UpdateParams.of(cfg), torch.Generator())
    assert stats["update/skipped"] == 1
    torch.testing.assert_close(p.detach(), start, rtol=0, atol=0)
    hook.remove()
    stats = ppo_update(model, opt, batch, UpdateParams.of(cfg), torch.Generator())
    assert stats["update/skipped"] == 0 and not torch.equal(p.detach(), start)


def _rollout(Rollout):
    ids = torch.tensor([[5, 6, 7], [8, 9, 10]])
    mask = torch.ones(2, 3, dtype=torch.bool)
    comp = torch.tensor([[11, 12, 13], [14, 15, 0]])
    cmask = torch.tensor([[1, 1, 1], [1, 1, 0]], dtype=torch.bool)
    return Rollout(prompt_ids=ids, prompt_mask=mask, completion_ids=comp, completion_mask=cmask,
                   logp=torch.zeros(2, 3), truncated=torch.zeros(2, dtype=torch.bool), texts=["a", "b"])


def test_save_is_atomic_and_keeps_the_last_k(tiny_model_dir, tmp_path):
    from reasoner.models import load_model

    cfg = load_config(None, [f"model.name={tiny_model_dir}"])
    model, tok = load_model(cfg.model)
    for step in (1, 2, 3):
        checkpoint.save(tmp_path, step, model, tok, {"metrics": []}, keep=2)
    (tmp_path / "checkpoints" / ".tmp-step-0000004-1").mkdir()  # a crash during a write leaves only this
    assert [c.name for c in checkpoint.list_checkpoints(tmp_path)] == ["step-0000002", "step-0000003"]
    assert checkpoint.find_resume(tmp_path, "auto").name == "step-0000003"
    assert checkpoint.find_resume(tmp_path / "nothing-here", "auto") is None
    with pytest.raises(FileNotFoundError, match="trainer_state.pt"):
        checkpoint.find_resume(tmp_path, str(tmp_path / "checkpoints" / ".tmp-step-0000004-1"))
