"""Mixed training data: ``data.train`` as weighted sources (reasoner.data.mixture), the mixed problem
stream (reasoner.runtime.MixedStream), per-source / per-verifier metrics (reasoner.breakdown)."""
from __future__ import annotations

import json
import math

import pytest
import torch
from torch.testing import assert_close

from reasoner import runtime, trackers
from reasoner.breakdown import Breakdown
from reasoner.cli import main as cli_main
from reasoner.config import ConfigError, load_config, save_config
from reasoner.data import DataError, mixture
from reasoner.data.mixture import Source, parse_sources
from reasoner.metrics import _per_source
from reasoner.types import Problem
from reasoner.verifiers import Verdict

WALL_CLOCK = ("time/", "tokens_per_s")  # the only metrics allowed to differ between two runs


def _problems(source: str, n: int, verifier: str = "math") -> list[Problem]:
    return [Problem(id=f"{source}/{i}", prompt=f"{i}+0=", answer=str(i), verifier=verifier, source=source)
            for i in range(n)]


# ---------------------------------------------------------------- parsing and errors

def test_a_bare_string_is_one_source_of_weight_one():
    assert parse_sources("synthetic") == [Source("synthetic", 1.0, label="synthetic")]
    cfg = load_config(None, [])
    assert cfg.data.train == "synthetic" and mixture.weights(parse_sources(cfg.data.train)) == {"synthetic": 1.0}


def test_compact_form_yaml_list_and_yaml_text_give_the_same_sources(tmp_path):
    compact = parse_sources("gsm8k:0.7,mbpp:0.3")
    assert [(s.name, s.weight, s.key) for s in compact] == [("gsm8k", 0.7, "data.train[0]"),
                                                             ("mbpp", 0.3, "data.train[1]")]
    as_list = [{"name": "gsm8k", "weight": 0.7}, {"name": "mbpp", "weight": 0.3}]
    assert parse_sources(as_list) == compact
    assert parse_sources("[{name: gsm8k, weight: 0.7}, {name: mbpp, weight: 0.3}]") == compact
    # the same through the config loader: command line (both forms) and a YAML file
    (tmp_path / "c.yaml").write_text("data:\n  train:\n    - {name: gsm8k, weight: 0.7}\n    - {name: mbpp, weight: 0.3}\n")
    for cfg in (load_config(None, ["data.train=gsm8k:0.7,mbpp:0.3"]),
                load_config(None, ["data.train=[{name: gsm8k, weight: 0.7}, {name: mbpp, weight: 0.3}]"]),
                load_config(tmp_path / "c.yaml")):
        assert parse_sources(cfg.data.train) == compact
    save_config(cfg, tmp_path / "saved.yaml")  # a run's config.yaml, the base of a resume
    assert parse_sources(load_config(None, [], base=tmp_path / "saved.yaml").data.train) == compact


def test_omegaconf_containers_are_sources_too():
    omegaconf = pytest.importorskip("omegaconf")
    tree = omegaconf.OmegaConf.create({"train": [{"name": "gsm8k", "weight": 0.7},
                                                 {"name": "mbpp", "weight": 0.3, "field_map": {"problem": "text"}}]})
    assert parse_sources(tree.train) == [Source("gsm8k", 0.7, label="gsm8k", key="data.train[0]"),
                                         Source("mbpp", 0.3, field_map={"problem": "text"}, label="mbpp",
                                                key="data.train[1]")]


def test_names_with_colons_slashes_and_per_source_overrides():
    # split at the last ':' only when a number follows: a hub config name stays part of the name
    assert [(s.name, s.weight) for s in parse_sources("hub:owner/set:main,./d/code.jsonl.gz:2")] == [
        ("hub:owner/set:main", 1.0), ("./d/code.jsonl.gz", 2.0)]
    assert [s.label for s in parse_sources("hub:owner/set:main,./d/code.jsonl.gz:2")] == ["set_main", "code"]
    (s,) = parse_sources([{"name": "mbpp", "split": "validation", "verifier": "code", "label": "py",
                           "field_map": {"problem": "text"}}])
    assert (s.split, s.verifier, s.label, s.field_map, s.weight) == ("validation", "code", "py", {"problem": "text"}, 1.0)


@pytest.mark.parametrize("value, message", [
    ("gsm8k:0.7,mbpp:-0.3", r"data\.train\[1\]: the weight of 'mbpp' \(-0\.3\) is negative; weights are shares >= 0"),
    ("gsm8k:0,mbpp:0", r"data\.train: the weights sum to 0 .*give at least one source a weight > 0"),
    ("gsm8k:lots", r"data\.train: the weight of 'gsm8k' must be a number, got 'lots'"),
    ("synthetic:0.5,gsm8kk:0.5", r"data\.train\[1\]: unknown training set 'gsm8kk' \(did you mean 'gsm8k'\?\).*"
                                 r"`reasoner list`"),
    ("[{name: gsm8k, wieght: 1}]", r"data\.train: unknown field 'wieght' \(did you mean 'weight'\?\)"),
    ("gsm8k:0.5,gsm8k:0.5", r"data\.train: data\.train\[0\] and data\.train\[1\] both get the metric label 'gsm8k'"
                            r"; give one a label of its own"),
    ("", r"data\.train is empty; name a training set"),
])
def test_bad_sources_name_the_key_and_the_fix(value, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [f"data.train={value}"])


def test_an_unknown_source_is_one_line_from_the_cli_before_any_model_loads(tmp_path, capsys):
    assert cli_main(["train", f"run.out_dir={tmp_path / 'run'}", "data.train=synthetic:0.5,gsm8kk:0.5"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("reasoner: error: data.train[1]: unknown training set 'gsm8kk'") and "\n" not in err
    assert "reasoner list" in err and not (tmp_path / "run").exists()


def test_a_source_that_cannot_be_loaded_or_is_empty_names_its_entry(tmp_path):
    d = load_config(None, []).data
    with pytest.raises(DataError, match=r"data\.train\[1\]='.*nope\.jsonl': data file not found"):
        mixture.load_sources(parse_sources(f"synthetic:1,{tmp_path / 'nope.jsonl'}:1"), d)
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(DataError, match=r"data\.train\[1\]='.*empty\.jsonl' \(split 'train'\): the training set is"):
        mixture.load_sources(parse_sources(f"synthetic:1,{tmp_path / 'empty.jsonl'}:1"), d)


def test_loaded_sources_carry_their_label_and_verifier_override(tmp_path):
    path = tmp_path / "sums.jsonl"
    path.write_text("".join(json.dumps({"problem": f"{i}+1=", "answer": str(i + 1)}) + "\n" for i in range(3)))
    d = load_config(None, ["data.synthetic_size=16"]).data
    synth, sums = mixture.load_sources(parse_sources([{"name": "synthetic", "weight": 2},
                                                      {"name": str(path), "verifier": "first_char_is_1"}]), d)
    assert {p.source for p in synth} == {"synthetic"} and {p.verifier for p in synth} == {"math"}
    assert {p.source for p in sums} == {"sums"} and {p.verifier for p in sums} == {"first_char_is_1"}
    (alone,) = mixture.load_sources(parse_sources(str(path)), d)  # one source: the problems as loaded
    assert {p.source for p in alone} == {"sums.jsonl"} and {p.verifier for p in alone} == {"math"}


# ---------------------------------------------------------------- the stream

def test_one_source_keeps_todays_problem_order():
    problems, B, seed = _problems("x", 10), 4, 3
    stream = runtime.problem_stream(problems, {"x": 1.0}, B, seed)
    assert type(stream) is runtime.ProblemStream
    # epoch e is randperm(10) seeded with seed * 100_003 + e (seeds.epoch_order); 5 steps of 4 = 2 epochs
    perms = [torch.randperm(10, generator=torch.Generator().manual_seed(seed * 100_003 + e)).tolist() for e in (0, 1)]
    expected = [problems[i] for i in perms[0] + perms[1]]
    assert [p for step in range(5) for p in stream.global_batch(step)] == expected


def test_mixture_proportions_are_within_two_standard_errors_over_200_steps():
    problems = _problems("a", 50) + _problems("b", 7) + _problems("off", 3)
    B, steps, w = 8, 200, 0.7
    # independent draws: the share of "a" in n = B * steps = 1600 draws has standard error
    # sqrt(w (1 - w) / n) = sqrt(0.21 / 1600) = 0.011456, so 2 SE = 0.0229. Systematic sampling does
    # better: each step gives "a" floor(5.6) = 5 or 6 problems (variance 0.6 * 0.4 = 0.24), so over
    # 200 steps the count's SD is sqrt(200 * 0.24) = 6.9 draws, a share SD of 0.0043: 2 SE is > 5 of its SDs.
    se = math.sqrt(w * (1 - w) / (B * steps))
    for seed in range(5):
        stream = runtime.problem_stream(problems, {"a": 0.7, "b": 0.3, "off": 0.0}, B, seed)
        batches = [stream.global_batch(step) for step in range(steps)]
        share = sum(p.source == "a" for b in batches for p in b) / (B * steps)
        assert abs(share - w) <= 2 * se, (seed, share)
        assert {sum(p.source == "a" for p in b) for b in batches} == {5, 6}  # floor / ceil of 0.7 * 8
        assert not any(p.source == "off" for b in batches for p in b)  # weight 0: never drawn


def test_each_source_walks_its_own_shuffled_passes():
    problems = _problems("a", 3) + _problems("b", 5)
    stream = runtime.problem_stream(problems, {"a": 1.0, "b": 1.0}, 4, seed=1)
    drawn = [p for step in range(30) for p in stream.global_batch(step)]  # 60 draws each: 20 passes of a, 12 of b
    for name, n in (("a", 3), ("b", 5)):
        seq = [p.id for p in drawn if p.source == name]
        passes = [seq[i:i + n] for i in range(0, len(seq) - n + 1, n)]
        assert all(sorted(x) == sorted(p.id for p in problems if p.source == name) for x in passes)
        assert len({tuple(x) for x in passes}) > 1  # each pass its own order


def test_any_step_in_any_order_gives_the_same_batch_and_the_ranks_share_it():
    problems = _problems("a", 11) + _problems("b", 4)
    weights = {"a": 0.6, "b": 0.4}
    straight = [runtime.problem_stream(problems, weights, 4, seed=2).global_batch(s) for s in range(40)]
    resumed = runtime.problem_stream(problems, weights, 4, seed=2)  # a fresh stream asked for step 37 first
    assert resumed.global_batch(37) == straight[37]
    far = runtime.problem_stream(problems, weights, 4, seed=2)  # dynamic sampling's later positions first
    far.global_batch(500)
    assert [far.global_batch(s) for s in range(40)] == straight
    ranks = [runtime.problem_stream(problems, weights, 4, 2, rank=r, world=2) for r in (0, 1)]
    assert [ranks[0].batch(s) + ranks[1].batch(s) for s in range(40)] == straight


# ---------------------------------------------------------------- metrics

def _v(status: str) -> Verdict:
    return Verdict(float(status == "correct"), status, "", "")


def test_breakdown_columns_per_source_and_per_verifier():
    problems = [Problem("1", "p", source="a"), Problem("2", "p", source="b", verifier="code"),
                Problem("3", "p", source="a")]
    verdicts = [_v("correct"), _v("wrong"), _v("error"), _v("wrong"), _v("correct"), _v("correct")]
    scores = torch.tensor([[1.0, 0.0], [0.0, 0.0], [1.0, 1.0]])  # [B=3, G=2]
    lengths = torch.tensor([2, 4, 6, 8, 1, 3])  # [N=6]
    row = Breakdown(("a", "b", "c"), ("code", "math")).row(problems, verdicts, scores, lengths)
    # a = groups 0 and 2, rows 0, 1, 4, 5: reward (1+0+1+1)/4 = .75; correct 3 of 4; wrong 1 of 4;
    # length (2+4+1+3)/4 = 2.5; group 0 spread 1, group 2 spread 0: zero-variance 1 of 2
    expected_a = {"count": 2.0, "reward": 0.75, "accuracy": 0.75, "verdict/correct": 0.75, "verdict/wrong": 0.25,
                  "verdict/unparseable": 0.0, "verdict/timeout": 0.0, "verdict/error": 0.0, "length": 2.5,
                  "zero_var_groups": 0.5}
    assert_close({k[len("source/a/"):]: v for k, v in row.items() if k.startswith("source/a/")}, expected_a)
    # b = group 1, rows 2, 3: reward 0, error 1 of 2, wrong 1 of 2, length (6+8)/2 = 7, zero-variance 1 of 1
    assert_close([row[f"source/b/{k}"] for k in ("count", "reward", "verdict/error", "verdict/wrong", "length",
                                                 "zero_var_groups")], [1.0, 0.0, 0.5, 0.5, 7.0, 1.0])
    assert row["source/c/count"] == 0.0 and not any(k.startswith("source/c/") and k != "source/c/count" for k in row)
    assert_close([row[k] for k in ("verifier/code/count", "verifier/math/count", "verifier/math/reward")],
                 [1.0, 2.0, 0.75])  # math = the groups of a
    one = Breakdown.of(["synthetic"], _problems("synthetic", 4))  # the default run: one source, one verifier
    assert one == Breakdown() and one.row(problems, verdicts, scores, lengths) == {}
    assert Breakdown.of(["x"], _problems("x", 2) + _problems("x", 2, "code")).verifiers == ("code", "math")


def test_the_plot_gets_one_series_per_source():
    rows = [{"step": 1, "source/a/accuracy": 0.5, "source/b/accuracy": 0.0, "source/a/verdict/correct": 0.5},
            {"step": 2, "source/a/accuracy": 1.0}]
    assert _per_source(rows, "accuracy") == [("a", "source/a/accuracy"), ("b", "source/b/accuracy")]


# ---------------------------------------------------------------- a real mixed run

class _Recorder:
    """A tracker sink that keeps what it is sent."""

    def __init__(self):
        self.rows: list[tuple[int, dict]] = []

    def open(self, ctx): ...

    def log(self, step, values):
        self.rows.append((step, values))

    def samples(self, step, rows): ...

    def close(self): ...


class _Killed(Exception):
    pass


def _code_set(tmp_path):
    """Three trivial MBPP-format code problems (short: the tiny model's context is 64 characters)."""
    path = tmp_path / "code.jsonl"
    path.write_text("".join(json.dumps({"task_id": i, "text": t, "test_list": [f"assert f()=={i}"]}) + "\n"
                            for i, t in enumerate(["one", "two", "six"])))
    return path


def _rows(out) -> list[dict]:
    return [{k: v for k, v in json.loads(x).items() if not k.startswith(WALL_CLOCK)}
            for x in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.usefixtures("keep_threads")
def test_a_mixed_run_logs_both_sources_and_resumes_exactly(run_args, tmp_path, monkeypatch):
    from reasoner.run import Run
    from reasoner.trainer import train

    sent = _Recorder()
    monkeypatch.setattr(trackers, "make", lambda *a, **k: trackers.Trackers([sent], tmp_path, {}, "p"))
    args = lambda out: run_args(  # noqa: E731
        f"run.out_dir={out}", f"data.train=synthetic:0.5,{_code_set(tmp_path)}:0.5", "run.allow_weak_sandbox=true",
        "sampling.group_size=2", "run.steps=4", "run.save_every=2", "run.eval_every=2", "algo.beta=0",
        "data.synthetic_size=64", "data.eval_size=4", "run.log_samples_every=0", "algo.reward_weights={length: 1.0}")
    cfg = load_config(None, args(tmp_path / "straight"))
    train(cfg)
    straight = _rows(tmp_path / "straight")
    steps = straight[1:]  # row 0: the evaluation before training
    # each step's 4 problems: the stream's own draws (systematic sampling: 2 + 2 at weights 0.5 / 0.5)
    stream = runtime.problem_stream([p for part in mixture.load_sources(parse_sources(cfg.data.train), cfg.data)
                                     for p in part], {"synthetic": 0.5, "code": 0.5}, 4, cfg.data.seed)
    for r in steps:
        drawn = [p.source for p in stream.global_batch(r["step"] - 1)]
        assert (r["source/synthetic/count"], r["source/code/count"]) == (drawn.count("synthetic"), drawn.count("code"))
        assert r["verifier/math/count"] == r["source/synthetic/count"] and r["verifier/code/count"] == r[
            "source/code/count"]
    for metric in ("reward", "accuracy", "verdict/wrong", "length", "zero_var_groups"):
        assert any(f"source/synthetic/{metric}" in r for r in steps) and any(f"source/code/{metric}" in r for r in steps)
    header = (tmp_path / "straight" / "training_metrics.csv").read_text().splitlines()[0].split(",")
    assert {"source/code/accuracy", "source/synthetic/reward", "verifier/code/reward"} <= set(header)
    assert all("source/code/count" in values for step, values in sent.rows if step > 0)  # the trackers get them
    assert (tmp_path / "straight" / "training_curves.png").is_file()

    real_record = Run.record

    def record_then_die(self, step, *a, **k):  # a kill after step 3's row, before its checkpoint (at 4)
        real_record(self, step, *a, **k)
        if step == 3:
            raise _Killed

    monkeypatch.setattr(Run, "record", record_then_die)
    with pytest.raises(_Killed):
        train(load_config(None, args(tmp_path / "cut")))
    monkeypatch.setattr(Run, "record", real_record)
    assert [r["step"] for r in _rows(tmp_path / "cut")] == [0, 1, 2, 3]
    train(load_config(None, [*args(tmp_path / "cut"), "run.resume=auto"]))
    assert _rows(tmp_path / "cut") == straight
