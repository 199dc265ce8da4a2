"""Verifiers of one's own for a run: ``run.plugins`` / ``--plugins`` load them; every row's verifier
is checked before the model loads; a verifier's exception text reaches samples.jsonl, the metrics
and the console; ``sampling.group_size=1`` is refused for group estimators."""
from __future__ import annotations

import json
import textwrap

import pytest

from reasoner import verifiers
from reasoner.cli import main as cli_main
from reasoner.config import ConfigError, load_config

PLUGIN = textwrap.dedent('''
    from reasoner import verifiers
    @verifiers.register("{name}")
    def _picky(completion, problem):
        if any(c in completion for c in "56789"):
            raise ValueError(f"cannot read {{completion!r}}")
        return verifiers.Verdict(0.0, "wrong", completion, "not it")
''')


@pytest.fixture
def plugin(tmp_path):
    """A .py file registering a verifier (a fresh name per test) that raises on some completions."""
    name = f"picky_{tmp_path.name.replace('-', '_')}"
    path = tmp_path / "my_verifiers.py"
    path.write_text(PLUGIN.format(name=name))
    yield path, name
    verifiers.REGISTRY._items.pop(name, None)


def _rows(path, verifier: str, n: int = 24, bad: int | None = None):
    rows = [{"problem": f"{a}+{a}=", "answer": str(2 * a), "verifier": "no_such_thing" if i == bad else verifier}
            for i, a in enumerate(range(10, 10 + n))]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _no_model(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr("reasoner.build.load_model", boom)


def test_run_plugins_registers_a_file_and_a_bad_plugin_names_the_key(plugin, tmp_path):
    path, name = plugin
    load_config(None, [f"run.plugins={path}"])
    assert name in verifiers.names()
    bad = tmp_path / "broken.py"
    bad.write_text("raise RuntimeError('broken plugin')\n")
    with pytest.raises(ConfigError, match=r"run\.plugins: .*broken\.py.*RuntimeError: broken plugin"):
        load_config(None, [f"run.plugins={bad}"])
    with pytest.raises(ConfigError, match=r"run\.plugins: .*no_such_module_xyz"):
        load_config(None, ["run.plugins=no_such_module_xyz"])


def test_unknown_verifier_fails_naming_the_row_before_the_model_loads(plugin, run_args, tmp_path, monkeypatch,
                                                                       capsys):
    path, name = plugin
    _no_model(monkeypatch)
    # without the plugin, the plugin's own name is unknown (the README's snippet pasted into a file)
    good = _rows(tmp_path / "good.jsonl", name)
    assert cli_main(["train", *run_args(f"data.train={good}", "run.steps=1")]) == 2
    assert f"unknown verifier {name!r}" in capsys.readouterr().err
    data = _rows(tmp_path / "train.jsonl", name, bad=5)
    assert cli_main(["train", *run_args(f"data.train={data}", f"run.plugins={path}", "run.steps=1")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("reasoner: error: data.train=")
    assert "row 5" in err and "'no_such_thing'" in err and name in err and "run.plugins" in err


def test_unknown_verifier_in_the_held_out_set_fails_too(plugin, run_args, tmp_path, monkeypatch, capsys):
    path, name = plugin
    _no_model(monkeypatch)
    held = _rows(tmp_path / "held.jsonl", name, bad=0)
    assert cli_main(["train", *run_args(f"data.eval={held}", f"run.plugins={path}", "run.steps=1")]) == 2
    assert "data.eval=" in capsys.readouterr().err


@pytest.mark.filterwarnings("ignore:training set overlaps")
def test_verifier_exception_text_reaches_samples_metrics_and_console(plugin, run_args, tmp_path, capsys):
    path, name = plugin
    data = _rows(tmp_path / "train.jsonl", name)
    args = run_args(f"data.train={data}", f"data.eval={data}", f"run.plugins={path}", "run.steps=3",
                    "run.log_samples_every=1", "run.eval_every=0", "algo.beta=0")
    assert cli_main(["train", *args]) == 0
    run = tmp_path / "run"
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert all("verify/error_frac" in r for r in rows[1:])
    comps = [c for line in (run / "samples.jsonl").read_text().splitlines() for c in json.loads(line)["completions"]]
    assert all("detail" in c for c in comps)
    errors = [c for c in comps if c["verdict"] == "error"]
    if not any(r["verify/error_frac"] > 0 for r in rows[1:]):
        pytest.skip("the model produced no completion the plugin raises on")
    assert errors and errors[0]["detail"].startswith("ValueError: cannot read")
    err = capsys.readouterr().err
    assert err.count("got verdict 'error'") == 1 and "ValueError: cannot read" in err


@pytest.mark.parametrize("advantage", ["grpo", "rloo", "dr_grpo"])
def test_group_size_one_is_refused_for_group_estimators(advantage):
    with pytest.raises(ConfigError, match=r"sampling\.group_size=1 .*zero advantage"):
        load_config(None, ["sampling.group_size=1", f"algo.advantage={advantage}"])


def test_group_size_one_is_fine_with_a_critic():
    assert load_config(None, ["sampling.group_size=1", "algo.advantage=gae"]).sampling.group_size == 1


def test_eval_plugins_and_names_checked_before_the_model_loads(plugin, tmp_path, monkeypatch, capsys):
    path, name = plugin
    suite = _rows(tmp_path / "suite.jsonl", name)
    monkeypatch.setattr("reasoner.models.load_model", lambda *a, **k: (_ for _ in ()).throw(AssertionError("loaded")))
    assert cli_main(["eval", "--suite", str(suite), "--out", str(tmp_path / "ev")]) == 2
    assert f"unknown verifier {name!r}" in capsys.readouterr().err
    with pytest.raises(AssertionError, match="loaded"):  # with --plugins the names pass and the model would load
        cli_main(["eval", "--suite", str(suite), "--plugins", str(path), "--out", str(tmp_path / "ev")])


def test_verify_with_a_plugin_and_an_unknown_verifier(plugin, capsys):
    path, name = plugin
    assert cli_main(["verify", "--verifier", "no_such_verifier", "--gold", "1", "--response", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "'no_such_verifier' is not registered" in err and "math" in err
    assert cli_main(["verify", "--plugins", str(path), "--verifier", name, "--gold", "2", "--response", "2"]) == 0
    assert "wrong" in capsys.readouterr().out
