"""``reasoner config show`` (the resolved config as commented YAML that --config reads back), the
``reasoner train --help`` pointer to it, and ``reasoner eval``'s flags as aliases of the ``eval.*`` keys."""
from __future__ import annotations

import argparse

import pytest
import yaml

from reasoner.cli import main as cli_main
from reasoner.commands import eval as eval_cmd
from reasoner.commands.train import resolve_config
from reasoner.config import Config, load_config, to_dict
from reasoner.config_doc import comments

OVERRIDES = ["algo.preset=dapo", "run.steps=7", "optim.lr=3e-4", "data.field_map={problem: question}",
             "sampling.stop=</a>,Q:", "data.instruction=Answer: #1", "optim.betas=[0.8, 0.95]", "eval.n=4",
             "algo.reward_weights={length: 0.5}", "model.gguf_file=none"]


def _show(capsys, *argv) -> str:
    capsys.readouterr()
    assert cli_main(["config", "show", *argv]) == 0
    return capsys.readouterr().out


def test_show_round_trips_through_train_config(tmp_path, capsys):
    out = _show(capsys, *OVERRIDES)
    f = tmp_path / "shown.yaml"
    f.write_text(out)
    expected = load_config(None, OVERRIDES)
    assert resolve_config(str(f), []) == expected  # what `reasoner train --config shown.yaml` runs with
    assert yaml.safe_load(out)["eval"]["n"] == 4  # plain YAML: the comments are comments
    assert _show(capsys, "--config", str(f)) == out  # and showing it again changes nothing


def test_show_without_arguments_is_the_default_config(capsys):
    tree = yaml.safe_load(_show(capsys))
    assert tree == to_dict(Config()) and list(tree) == ["model", "data", "sampling", "algo", "optim", "run", "eval"]


def test_each_key_is_followed_by_its_comment(capsys):
    lines = _show(capsys).splitlines()
    # the comments written beside the fields in reasoner/config.py
    assert "  batch_size: 8  # B problems per step" in lines
    assert "  group_size: 8  # G completions per problem" in lines
    assert "  n: 1  # samples per problem (avg@n, pass@k, maj@k)" in lines
    assert "  temperature: 1.0" in lines  # sampling.temperature has no comment: none is made up
    # a comment written on the lines above a field (optim.schedule: five lines) stays above it
    i = lines.index("  schedule: linear")
    assert lines[i - 5].startswith("  # constant | cosine | linear") and all(x.startswith("  # ")
                                                                              for x in lines[i - 5:i])
    # data.train has both: the comment beside it is shown, the maintainer's note above it is not
    assert comments()["data.train"].startswith("a named set (`reasoner list`), a file or hub id; or weighted")
    assert "OmegaConf" not in comments()["data.train"]


def test_show_reports_a_bad_key_like_train(capsys):
    assert cli_main(["config", "show", "run.stepz=1"]) == 2
    assert "did you mean run.steps?" in capsys.readouterr().err


def test_train_help_points_to_config_show(capsys):
    with pytest.raises(SystemExit):
        cli_main(["train", "--help"])
    text = capsys.readouterr().out
    assert "reasoner config show" in text and "section.key=value" in text and "did you mean" in text


def _eval_cfg(*argv):
    p = argparse.ArgumentParser()
    eval_cmd.add_arguments(p)
    args = p.parse_args(list(argv))
    return load_config(args.config, args.overrides, flags=eval_cmd.flags(args)).eval


def test_eval_flags_and_keys_agree():
    by_flags = _eval_cfg("--n", "4", "--top-p", "0.9", "--no-greedy", "--instruction", "Answer: x", "--k", "1,2",
                         "--gguf-file", "none", "--max-new-tokens", "8", "--suite", "gsm8k,math500",
                         "--synthetic-kinds", "mul")
    by_keys = _eval_cfg("eval.n=4", "eval.top_p=0.9", "eval.greedy=false", "eval.instruction=Answer: x", "eval.k=1,2",
                        "eval.gguf_file=none", "eval.max_new_tokens=8", "eval.suite=gsm8k,math500",
                        "eval.synthetic_kinds=mul")
    assert by_flags == by_keys and by_flags != Config().eval
    assert (by_flags.n, by_flags.top_p, by_flags.greedy, by_flags.instruction) == (4, 0.9, False, "Answer: x")
    # every eval key has a flag: the section is the one list of what `reasoner eval` takes
    assert set(eval_cmd.flags(argparse.Namespace(**{f: 0 for f in vars(Config().eval)}))) == \
        {f"eval.{f}" for f in vars(Config().eval)}


def test_eval_precedence_file_flags_overrides(tmp_path):
    f = tmp_path / "e.yaml"
    f.write_text("eval:\n  n: 2\n  seeds: 3\n  temperature: 0.8\n")
    e = _eval_cfg("--config", str(f), "--n", "4", "--temperature", "0.7", "eval.temperature=1.0")
    assert (e.n, e.seeds, e.temperature) == (4, 3, 1.0)  # file < flag < eval.key=value


def test_eval_command_bad_value_names_the_key_before_loading(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("reasoner.models.load_model", lambda *a, **k: (_ for _ in ()).throw(AssertionError))
    assert cli_main(["eval", "--backend", "vlm", "--out", str(tmp_path)]) == 2
    assert "eval.backend='vlm' is not valid; choose one of: transformers, vllm" in capsys.readouterr().err
    assert cli_main(["eval", "--suite", "synthetic", "--n", "two"]) == 2
    assert "eval.n: expected int, got 'two'" in capsys.readouterr().err
