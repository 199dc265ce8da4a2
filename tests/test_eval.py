"""benchmarks.evaluate / run_suites with a scripted sampler, and `reasoner eval` end to end on the tiny model."""
from __future__ import annotations

import argparse
import json

import pytest
import torch

from reasoner.benchmarks import Protocol, evaluate, maj_at_k, pass_at_k, run_suites
from reasoner.benchmarks.metrics import string_equivalent
from reasoner.config import DataConfig
from reasoner.sampler import SamplingParams
from reasoner.types import Problem, Rollout


class ScriptedSampler:
    """Answers each prompt from a script: prompt -> list of completions (cycled); records calls."""

    def __init__(self, script: dict[str, list[str]]):
        self.script, self.calls = script, []

    def generate(self, prompts: list[str], params: SamplingParams) -> Rollout:
        self.calls.append((list(prompts), params))
        texts = [self.script[p][j % len(self.script[p])] for p in prompts for j in range(params.n)]
        rows = len(texts)
        return Rollout(prompt_ids=torch.zeros(rows, 1, dtype=torch.long), prompt_mask=torch.ones(rows, 1, dtype=torch.bool),
                       completion_ids=torch.zeros(rows, 2, dtype=torch.long),
                       completion_mask=torch.ones(rows, 2, dtype=torch.bool), logp=torch.zeros(rows, 2),
                       truncated=torch.zeros(rows, dtype=torch.bool), texts=texts)

    def sync_weights(self, model) -> None:
        pass


PROBLEMS = [Problem("p/0", "1+1=", "2", source="t"), Problem("p/1", "2+3=", "5", source="t")]
SCRIPT = {"1+1=": ["\\boxed{2}", "\\boxed{3}", "\\boxed{2}", "\\boxed{3}"],  # 2 of 4 right, a 2-2 tie
          "2+3=": ["\\boxed{5}", "\\boxed{7}", "\\boxed{7}", "\\boxed{7}"]}  # 1 of 4 right, majority wrong


def test_evaluate_metrics_match_the_estimators():
    sampler = ScriptedSampler(SCRIPT)
    res = evaluate(sampler, PROBLEMS, ["1+1=", "2+3="], n=4, temperature=0.6, top_p=0.95, max_new_tokens=8,
                   seed=1, batch_size=4, equivalent=string_equivalent)
    m = res.metrics
    assert m["accuracy"] == pytest.approx(3 / 8) and m["avg@4"] == pytest.approx((2 / 4 + 1 / 4) / 2)
    for k in (1, 2, 4):
        assert m[f"pass@{k}"] == pytest.approx((pass_at_k(4, 2, k) + pass_at_k(4, 1, k)) / 2)
        want = (maj_at_k(["2", "3", "2", "3"], [1, 0, 1, 0], k, string_equivalent)
                + maj_at_k(["5", "7", "7", "7"], [1, 0, 0, 0], k, string_equivalent)) / 2
        assert m[f"maj@{k}"] == pytest.approx(want)
    # maj@4: problem 0 is a 2-2 tie (1/2), problem 1 majority is wrong (0): mean 1/4
    assert m["maj@4"] == pytest.approx(0.25)
    assert len(res.records) == 8 and res.records[1]["answer"] == "3" and res.records[1]["status"] == "wrong"
    assert {r["problem_id"] for r in res.records} == {"p/0", "p/1"}
    # batch_size counts completions: 4 per call = one prompt of n=4 per generate call
    assert len(sampler.calls) == 2 and sampler.calls[0][1] == SamplingParams(4, 0.6, 0.95, 8, seed=1_000_003)
    assert 0.0 <= m["verify_share"] <= 1.0 and m["completions_per_s"] > 0


def test_greedy_accuracy_and_bad_input():
    sampler = ScriptedSampler(SCRIPT)
    res = evaluate(sampler, PROBLEMS, ["1+1=", "2+3="])  # n=1, temperature 0: greedy accuracy
    assert res.metrics["accuracy"] == 1.0 and "maj@1" not in res.metrics  # first scripted answer is right
    assert sampler.calls[0][1].temperature == 0.0
    with pytest.raises(ValueError, match="as many prompts"):
        evaluate(sampler, PROBLEMS, ["1+1="])


def test_run_suites_writes_every_file_with_seed_spread(tmp_path):
    f = tmp_path / "toy.jsonl"
    f.write_text("".join(json.dumps({"problem": p.prompt, "answer": p.answer}) + "\n" for p in PROBLEMS))

    class Tok:
        chat_template = None

    proto = Protocol(n=4, temperature=0.6, top_p=0.95, max_new_tokens=8, seeds=[0, 1], batch_size=8)
    res = run_suites(ScriptedSampler(SCRIPT), Tok(), [str(f)], DataConfig(), proto, tmp_path / "out",
                     model="scripted", log=lambda s: None, equivalent=string_equivalent)
    out = tmp_path / "out"
    assert {p.name for p in out.iterdir()} == {"results.json", "completions.jsonl", "results.md", "pass_at_k.png"}
    saved = json.loads((out / "results.json").read_text())
    assert saved["protocol"]["n"] == 4 and saved["protocol"]["seeds"] == [0, 1] and "torch" in saved["protocol"]["versions"]
    e = saved["suites"]["toy"]
    assert e["std"]["avg@4"] == 0.0 and e["mean"]["avg@4"] == pytest.approx(3 / 8)  # the script ignores the seed
    assert e["greedy"]["accuracy"] == 1.0
    lines = (out / "completions.jsonl").read_text().splitlines()
    assert len(lines) == 2 + 2 * 8  # greedy (1 per problem) + 2 seeds x 2 problems x 4
    assert "| toy | 2 |" in (out / "results.md").read_text()
    assert res["timing"]["completions"] == 18


def _eval_args(tmp_path, model="tiny", **kw) -> argparse.Namespace:
    from reasoner.commands import eval as eval_cmd

    p = argparse.ArgumentParser()
    eval_cmd.add_arguments(p)
    argv = ["--model", str(model), "--suite", "synthetic", "--limit", "12", "--n", "4", "--max-new-tokens", "5",
            "--seeds", "2", "--temperature", "1.0", "--top-p", "1.0", "--device", "cpu", "--out", str(tmp_path)]
    for k, v in kw.items():
        argv += [f"--{k.replace('_', '-')}", str(v)]
    return p.parse_args(argv)


def test_eval_command_rejects_bad_flags_before_loading(tmp_path, capsys):
    from reasoner.commands import eval as eval_cmd

    assert eval_cmd.main(_eval_args(tmp_path, suite="nope")) == 2
    assert "valid choices" in capsys.readouterr().err
    assert eval_cmd.main(_eval_args(tmp_path, k="8")) == 2  # k > n


def test_reasoner_eval_end_to_end_on_tiny_model(tmp_path, capsys, tiny_model_dir):
    """The built-in tiny model (the conftest's quick 40-step build, loaded from its directory)."""
    from reasoner.commands import eval as eval_cmd

    assert eval_cmd.main(_eval_args(tmp_path, model=tiny_model_dir)) == 0
    printed = capsys.readouterr().out
    assert "completions/s" in printed and "in verification" in printed
    assert {p.name for p in tmp_path.iterdir()} >= {"results.json", "completions.jsonl", "results.md", "pass_at_k.png"}
    res = json.loads((tmp_path / "results.json").read_text())
    syn = res["suites"]["synthetic"]
    assert syn["num_problems"] == 12 and set(syn["seeds"]) == {"0", "1"}
    assert {"avg@4", "pass@1", "pass@2", "pass@4", "maj@4"} <= set(syn["mean"])
    assert syn["mean"]["pass@4"] >= syn["mean"]["pass@1"]  # pass@k is monotone in k
    assert syn["example_prompt"].endswith("=")  # synthetic renders bare, no instruction
    records = [json.loads(line) for line in (tmp_path / "completions.jsonl").read_text().splitlines()]
    assert len(records) == 12 + 2 * 12 * 4
    assert {r["status"] for r in records} <= {"correct", "wrong", "unparseable", "timeout", "error"}
    assert (tmp_path / "pass_at_k.png").stat().st_size > 1000


def test_suite_metrics_for_the_trainer(tmp_path):
    from reasoner.benchmarks import TrainingEval, load_suite, resolve_suite
    from reasoner.data import render_all
    from reasoner.config import DataConfig

    f = tmp_path / "toy.jsonl"
    f.write_text("".join(json.dumps({"problem": p.prompt, "answer": p.answer}) + "\n" for p in PROBLEMS))

    class Tok:
        chat_template = None

    problems = load_suite(resolve_suite(str(f)), DataConfig())
    sets = {str(f): (problems, render_all(problems, Tok(), DataConfig()))}  # as the build step makes them
    row = TrainingEval(ScriptedSampler(SCRIPT), sets[str(f)], sets, max_new_tokens=16, samples=4)(step=10)
    assert row == {"eval/accuracy": 1.0, "eval/sampled_accuracy": pytest.approx(3 / 8), f"eval/{f}/accuracy": 1.0,
                   f"eval/{f}/avg@4": pytest.approx(3 / 8), f"eval/{f}/pass@4": 1.0}
    # both problems have a right answer among 4
