"""Every user mistake is one line, ``reasoner: error: ...`` naming the file/row/key and the fix, exit
code 2, found before any model loads where it can be; tracebacks only with --debug / REASONER_DEBUG=1."""
from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from reasoner import checkpoint
from reasoner.cli import main as cli_main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def no_model(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr("reasoner.build.load_model", boom)


def _one_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("reasoner: error: ") and "\n" not in err, err
    assert "Traceback" not in err
    return err


def _train(tmp_path, *extra) -> int:
    return cli_main(["train", f"run.out_dir={tmp_path / 'run'}", "run.steps=1", "run.progress=false", *extra])


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_malformed_jsonl_names_file_line_and_column(tmp_path, capsys, no_model):
    f = _write(tmp_path / "bad.jsonl", '{"problem": "1+1=", "answer": "2"}\n{"problem": "2+2=", "answer": "4", x}\n')
    assert _train(tmp_path, f"data.train={f}") == 2
    err = _one_error(capsys)
    assert f"{f}:2:" in err and "column 36" in err and "data.skip_bad_rows" in err


def test_missing_field_and_unexpected_csv_columns_hint_field_map(tmp_path, capsys, no_model):
    f = _write(tmp_path / "cols.csv", "q,a\n1+1=,2\n")
    assert _train(tmp_path, f"data.train={f}") == 2
    err = _one_error(capsys)
    assert f"{f}:2" in err and "missing field 'problem'" in err and "fields: q, a" in err
    assert "data.field_map={problem: <that field>}" in err
    f = _write(tmp_path / "miss.jsonl", '{"problem": "1+1=", "answer": "2"}\n{"question": "2+2="}\n')
    assert _train(tmp_path, f"data.train={f}") == 2
    assert f"{f}:2" in _one_error(capsys)


def test_nonexistent_and_empty_train_files(tmp_path, capsys, no_model):
    assert _train(tmp_path, f"data.train={tmp_path / 'nope.jsonl'}") == 2
    err = _one_error(capsys)
    assert f"data.train='{tmp_path / 'nope.jsonl'}': data file not found" in err and "a named set" in err
    assert _train(tmp_path, "data.eval=nope.jsonl") == 2
    assert f"data.eval='nope.jsonl': data file not found: nope.jsonl (from {Path.cwd()})" in _one_error(capsys)
    assert _train(tmp_path, f"run.resume={tmp_path}") == 2
    assert "no trainer_state.pt there; give a checkpoint directory" in _one_error(capsys)
    empty = _write(tmp_path / "empty.jsonl", "")
    assert _train(tmp_path, f"data.train={empty}") == 2
    err = _one_error(capsys)
    assert str(empty) in err and "empty" in err  # named, and before the model loaded (no_model)


def test_bad_model_path_and_missing_smollm2(tmp_path, capsys, monkeypatch):
    assert _train(tmp_path, f"model.name={tmp_path / 'no_such_model'}") == 2
    assert "no_such_model" in _one_error(capsys)

    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "files", missing)
    assert _train(tmp_path, "model.name=smollm2", "run.overwrite=true") == 2
    err = _one_error(capsys)
    assert "bash scripts/setup.sh --smollm2" in err and "--no-deps" in err


def test_unwritable_out_dir(tmp_path, capsys, no_model):
    blocker = _write(tmp_path / "a_file", "")
    assert cli_main(["train", f"run.out_dir={blocker / 'run'}"]) == 2
    err = _one_error(capsys)
    assert "run.out_dir=" in err and "not writable" in err


def test_yaml_syntax_error_names_the_file(tmp_path, capsys, no_model):
    f = _write(tmp_path / "run.yaml", "run:\n  steps: 3\n  seed: [1\n")
    assert cli_main(["train", "--config", str(f)]) == 2
    err = _one_error(capsys)
    assert f"{f}:" in err and "invalid YAML" in err and "<unicode string>" not in err


def test_debug_shows_the_traceback(tmp_path, monkeypatch, capsys):
    f = _write(tmp_path / "run.yaml", "run: [1\n")
    with pytest.raises(ValueError, match="invalid YAML"):
        cli_main(["train", "--config", str(f), "--debug"])
    monkeypatch.setenv("REASONER_DEBUG", "1")
    with pytest.raises(ValueError, match="invalid YAML"):
        cli_main(["train", "--config", str(f)])


def test_verify_unknown_verifier(capsys):
    assert cli_main(["verify", "--verifier", "no_such_verifier", "--gold", "1", "--response", "1"]) == 2
    assert "no_such_verifier" in _one_error(capsys)


def test_list_into_a_closed_pipe_is_quiet():
    proc = subprocess.run(f"{sys.executable} -m reasoner list | head -c 1", shell=True, cwd=ROOT, capture_output=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert proc.stderr.decode().strip() == "" and proc.stdout.decode() == "v"


def test_offline_named_set_fails_fast_with_the_data_dir_hint(tmp_path, monkeypatch):
    from reasoner.config import DataConfig
    from reasoner.data import DataError, load_problems, named

    monkeypatch.delenv("REASONER_DATA_DIR", raising=False)
    monkeypatch.setattr(named, "hub_reachable", lambda timeout=3.0: False)
    monkeypatch.setattr(named, "read_hub", lambda *a, **k: (_ for _ in ()).throw(ConnectionError("offline")))
    t0 = time.perf_counter()
    with pytest.raises(DataError, match=r"unreachable.*data\.data_dir.*REASONER_DATA_DIR.*gsm8k/test"):
        load_problems("gsm8k", "test", DataConfig(data_dir=str(tmp_path)))
    assert time.perf_counter() - t0 < 5


def test_a_failed_checkpoint_write_is_one_line_and_leaves_no_tmp(tiny_model_dir, tmp_path, monkeypatch):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model, tok = AutoModelForCausalLM.from_pretrained(tiny_model_dir), AutoTokenizer.from_pretrained(tiny_model_dir)
    checkpoint.save(tmp_path, 1, model, tok, {"x": 1}, keep=2)

    def full(*a, **k):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(OSError, match=r"could not write checkpoint .*step-0000002.*previous checkpoints are intact"):
        checkpoint.save(tmp_path, 2, model, tok, {"x": 1}, keep=2)
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step-0000001"]


def test_progress_off_a_terminal_is_lines_not_a_bar(run_args, tmp_path, capsys):
    assert cli_main(["train", *run_args("run.steps=2", "run.progress=true", "run.eval_every=0")]) == 0
    cap = capsys.readouterr()
    assert "\r" not in cap.err and "\r" not in cap.out
    assert "step 1/2" in cap.out and "step 2/2" in cap.out


def test_a_second_fresh_run_in_the_same_directory_is_refused_before_the_model_loads(run_args, tmp_path, capsys,
                                                                                     monkeypatch):
    assert cli_main(["train", *run_args("run.steps=1", "run.eval_every=0")]) == 0
    monkeypatch.setattr("reasoner.build.load_model", lambda *a, **k: (_ for _ in ()).throw(AssertionError))
    capsys.readouterr()
    assert cli_main(["train", *run_args("run.steps=1")]) == 2
    assert "run.overwrite=true" in _one_error(capsys)
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == 1  # the first run's records are untouched


def test_verify_dataset_errors_name_the_line_and_column(tmp_path, capsys):
    f = _write(tmp_path / "v.jsonl", '{"gold": "1", "response": "1"}\n{"gold": "1", "response": "1" x}\n')
    assert cli_main(["verify", "--dataset", str(f)]) == 2
    assert f"{f}:2: not JSON" in (err := _one_error(capsys)) and "column 31" in err
    f = _write(tmp_path / "v2.jsonl", '{"gold": "1"}\n')
    assert cli_main(["verify", "--dataset", str(f)]) == 2
    assert f"{f}:1:" in _one_error(capsys)
    assert cli_main(["verify", "--dataset", str(tmp_path / "none.jsonl")]) == 2
    assert "no such file" in _one_error(capsys)
