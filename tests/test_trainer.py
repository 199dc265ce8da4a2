"""The spine end to end on a tiny model: files written, parameters move, a learnable reward rises."""
from __future__ import annotations

import json

import torch

from reasoner import verifiers
from reasoner import runtime
from reasoner.cli import main as cli_main
from reasoner.config import load_config
from reasoner.trainer import train


def test_cli_train_writes_every_output(run_args, tmp_path):
    from transformers import AutoModelForCausalLM

    args = run_args("run.steps=2", "run.save_every=1", "run.log_samples_every=1",
                 "run.eval_every=1")
    assert cli_main(["train", *args]) == 0
    run = tmp_path / "run"
    for name in ("config.yaml", "metrics.jsonl", "training_metrics.csv", "summary.json", "training_curves.png",
                 "samples.jsonl"):
        assert (run / name).is_file() and (run / name).stat().st_size > 0, name
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 1, 2]
    step = rows[1]
    for key in ("reward/mean", "accuracy", "frac_zero_std_groups", "length/mean", "length/max",
                "length/truncated_frac", "policy/entropy", "loss/kl", "loss/clip_frac", "update/grad_norm", "lr",
                "time/generate", "time/verify", "time/reference", "time/update", "tokens_per_s",
                "verify/correct_frac", "verify/timeout_frac", "eval/accuracy"):
        assert key in step, key
    summary = json.loads((run / "summary.json").read_text())
    assert {"heldout_accuracy_before", "heldout_accuracy_after"} <= set(summary)
    ckpts = sorted((run / "checkpoints").glob("step-*"))
    assert [c.name for c in ckpts] == ["step-0000001", "step-0000002"]
    model = AutoModelForCausalLM.from_pretrained(ckpts[-1])  # loads directly
    assert sum(p.numel() for p in model.parameters()) > 0


def test_cli_bad_key_fails_before_loading_a_model(capsys, monkeypatch):
    def boom(*a, **k):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr("reasoner.models.load_model", boom)
    assert cli_main(["train", "algo.advantge=grpo"]) == 2
    err = capsys.readouterr().err
    assert "unknown config key 'algo.advantge'" in err and "advantage" in err


def test_beta_zero_loads_no_reference(run_args, tmp_path, monkeypatch):
    made = []
    real = runtime.make_reference
    monkeypatch.setattr(runtime, "make_reference", lambda *a: made.append(real(*a)) or made[-1])
    summary = train(load_config(None, run_args("run.steps=1", "algo.beta=0")))
    assert made == [None]
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert rows[1]["time/reference"] < 1e-3 and summary["steps"] == 1


def test_training_raises_a_learnable_reward_and_moves_every_parameter(tiny_model_dir, run_args, learnable_problems,
                                                                       tmp_path):
    from transformers import AutoModelForCausalLM

    data = learnable_problems
    cfg = load_config(None, run_args(f"data.train={data}", f"data.eval={data}",
                                  "run.steps=16", "algo.beta=0", "optim.lr=3e-3", "run.batch_size=8",
                                  "sampling.group_size=8", "run.eval_every=0", "run.save_every=0"))
    train(cfg)
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    rewards = [r["reward/mean"] for r in rows if "reward/mean" in r]
    early, late = sum(rewards[:4]) / 4, sum(rewards[-4:]) / 4
    assert late > early + 0.2, rewards
    before = AutoModelForCausalLM.from_pretrained(tiny_model_dir).state_dict()
    after = AutoModelForCausalLM.from_pretrained(tmp_path / "run" / "final").state_dict()
    unchanged = [k for k in before if torch.equal(before[k], after[k]) and before[k].is_floating_point()]
    assert unchanged == [] or all("rotary" in k for k in unchanged), unchanged


def test_crashing_verifier_gives_error_verdict_not_a_crash():
    @verifiers.register("always_crashes")
    def crash(completion, problem):
        raise RuntimeError("boom")

    from reasoner.types import Problem

    out = verifiers.score_all(["1", "2"], [Problem("a", "x", "1", verifier="always_crashes"),
                                           Problem("b", "x", "1", verifier="no_such_verifier")])
    assert [v.status for v in out] == ["error", "error"] and [v.score for v in out] == [0.0, 0.0]
    assert "boom" in out[0].detail and "unknown verifier 'no_such_verifier'" in out[1].detail


def test_hanging_verifier_gives_timeout_verdict_and_scoring_goes_on():
    import time

    from reasoner.types import Problem

    @verifiers.register("hangs_on_b")
    def hangs(completion, problem):
        if completion == "b":
            time.sleep(3)
        return verifiers.Verdict(1.0, "correct", completion, "")

    @verifiers.register("returns_junk")
    def junk(completion, problem):
        return 1.0

    t0 = time.monotonic()
    out = verifiers.score_all(["a", "b", "c"], [Problem("1", "x", verifier="hangs_on_b"),
                                                Problem("2", "x", verifier="hangs_on_b"),
                                                Problem("3", "x", verifier="returns_junk")], timeout=0.5)
    assert time.monotonic() - t0 < 2.0
    assert [v.status for v in out] == ["correct", "timeout", "error"]
    assert "did not answer within 0.5s" in out[1].detail and "not a Verdict" in out[2].detail
