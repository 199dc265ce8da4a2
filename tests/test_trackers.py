"""Trackers behind the metrics log (run.report_to), read back with each package's own reader, offline;
library LR schedules; the best checkpoint and early stopping."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from reasoner import checkpoint, trackers
from reasoner.cli import main as cli_main
from reasoner.config import ConfigError, OptimConfig, load_config
from reasoner.optim import OWN_SCHEDULES, SCHEDULES, lr_factor, make_schedule
from reasoner.trainer import train

pytestmark = pytest.mark.usefixtures("keep_threads")


def _args(model_dir, out, *extra):
    return [f"model.name={model_dir}", f"run.out_dir={out}", "run.progress=false", "run.threads=1",
            "run.batch_size=2", "sampling.group_size=2", "sampling.max_new_tokens=3", "data.eval_size=4",
            "data.synthetic_size=32", "run.eval_every=2", "run.log_samples_every=2", "run.seed=1",
            "run.save_every=2", "algo.beta=0", *extra]


def _rows(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


# ---------------------------------------------------------------- config errors


def test_bad_tracker_config_names_the_key_and_the_fix(monkeypatch):
    with pytest.raises(ConfigError, match=r"run.report_to: unknown tracker 'tensorbord'; choose from: tensorboard"):
        load_config(None, ["run.report_to=tensorbord"])
    with pytest.raises(ConfigError, match="'none' cannot be combined"):
        load_config(None, ["run.report_to=none,tensorboard"])
    real = trackers.importlib.util.find_spec
    monkeypatch.setattr(trackers.importlib.util, "find_spec", lambda m: None if m == "wandb" else real(m))
    with pytest.raises(ConfigError, match=r"run.report_to=wandb needs the optional extra 'wandb'.*reasoner\[wandb\]"):
        load_config(None, ["run.report_to=wandb"])
    assert load_config(None, []).run.report_to == ["none"]
    with pytest.raises(ConfigError, match=r"run.best_metric='eval/accuracy' needs evaluations.*run.eval_every>0"):
        load_config(None, ["run.best_metric=eval/accuracy", "run.eval_every=0"])
    with pytest.raises(ConfigError, match="run.patience=3 .* set run.best_metric"):
        load_config(None, ["run.patience=3"])
    with pytest.raises(ConfigError, match="run.best_mode='up' is not valid; choose one of: max, min"):
        load_config(None, ["run.best_mode=up"])


# ---------------------------------------------------------------- schedules


def _lrs(cfg: OptimConfig, total: int) -> list[float]:
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    sched, out = make_schedule(opt, cfg, total), []
    for _ in range(total):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_old_schedule_names_keep_their_values_and_match_transformers_without_warmup():
    from transformers import get_scheduler

    for name in OWN_SCHEDULES:
        for warmup in (0, 3):
            cfg = OptimConfig(lr=1.0, warmup_steps=warmup, schedule=name)
            assert _lrs(cfg, 10) == pytest.approx([lr_factor(s, warmup, 10, name) for s in range(10)], abs=1e-12)
        opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
        hf, ours = get_scheduler(name, opt, num_warmup_steps=0, num_training_steps=10), []
        for _ in range(10):
            ours.append(opt.param_groups[0]["lr"])
            opt.step()
            hf.step()
        assert ours == pytest.approx(_lrs(OptimConfig(lr=1.0, schedule=name), 10), abs=1e-12)
    # with warm-up, reasoner's reaches optim.lr one step earlier than transformers' (documented in config.py)
    assert _lrs(OptimConfig(lr=1.0, warmup_steps=4, schedule="linear"), 10)[:4] == pytest.approx([.25, .5, .75, 1.0])
    assert "reduce_lr_on_plateau" not in SCHEDULES and "warmup_stable_decay" in SCHEDULES


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step")  # no optimizer steps here
def test_a_library_schedule_resumes_exactly_from_the_optimizer_state():
    from reasoner.optim import Optimizer

    cfg = OptimConfig(lr=1.0, warmup_steps=2, schedule="cosine_with_min_lr", schedule_kwargs={"min_lr_rate": 0.1})
    straight = _lrs(cfg, 12)
    assert straight[:3] == pytest.approx([0.0, 0.5, 1.0]) and min(straight[1:]) >= 0.1 - 1e-9  # HF warm-up from 0

    def optimizer():
        return Optimizer(torch.nn.Linear(2, 1), cfg, 12, make=lambda ps: torch.optim.SGD(ps, lr=1.0))

    first = optimizer()
    for _ in range(5):
        first.schedule_step()
    state = first.state_dict()  # what a checkpoint holds
    resumed, rest = optimizer(), []
    resumed.load_state_dict(state)
    for _ in range(7):
        rest.append(resumed.lr)
        resumed.schedule_step()
    assert rest == pytest.approx(straight[5:], abs=1e-12)
    with pytest.raises(ConfigError, match="optim.schedule=cosine_with_min_lr .* min_lr"):
        load_config(None, ["optim.schedule=cosine_with_min_lr"])
    from reasoner.commands.list import registries

    assert "warmup_stable_decay" in registries()["learning-rate schedules (optim.schedule)"]


def test_only_rank_0_reports(tmp_path):
    from reasoner import distributed

    assert trackers.make(["tensorboard"], tmp_path, {}, "p", main=False).sinks == []
    assert [type(s).__name__ for s in trackers.make(["tensorboard"], tmp_path, {}, "p").sinks] == ["TensorBoard"]
    assert trackers.make(["none"], tmp_path, {}, "p").sinks == []
    twin = distributed._SilentLog(tmp_path, [], trackers.make(["tensorboard"], tmp_path, {}, "p"))
    assert twin.sinks.sinks == []  # the other ranks' no-op log reports to nothing


# ---------------------------------------------------------------- trackers, end to end


def test_tensorboard_event_files_hold_the_metrics_config_and_samples(tiny_model_dir, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "tb"
    train(load_config(None, _args(tiny_model_dir, out, "run.steps=4", "run.report_to=tensorboard")))
    # resumed with more steps: the same event directory goes on
    assert cli_main(["train", "--resume", "auto", *_args(tiny_model_dir, out, "run.steps=6",
                                                         "run.report_to=tensorboard")]) == 0
    acc = EventAccumulator(str(out / "tensorboard"), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    rows = _rows(out)
    reward = [(e.step, e.value) for e in acc.Scalars("reward/mean")]
    assert [s for s, _ in reward] == list(range(1, 7))
    assert [v for _, v in reward] == pytest.approx([r["reward/mean"] for r in rows[1:]], rel=1e-6)
    evals = [e.step for e in acc.Scalars("eval/accuracy")]
    assert evals == [0, 2, 4, 6]  # before, every run.eval_every, the final evaluation
    tags = acc.Tags()["tensors"]
    assert "config/text_summary" in tags and "samples/text_summary" in tags
    sample = acc.Tensors("samples/text_summary")[0]
    assert sample.step == 1 and b"completion" in sample.tensor_proto.string_val[0]


def _wandb_records(path: Path):
    """The protobuf records of an offline run's ``run-<id>.wandb`` file: W&B's LevelDB-log framing
    (a 7-byte ':W&B' header, 32 KiB blocks of records: crc32c, length, type FULL/FIRST/MIDDLE/LAST)."""
    from wandb.proto import wandb_internal_pb2

    data, pos, block, part = path.read_bytes(), 7, 32768, b""
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:
            pos += left
            continue
        length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        if kind == 0 and length == 0:
            break
        part, pos = part + data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind in (1, 4):  # FULL, LAST
            rec = wandb_internal_pb2.Record()
            rec.ParseFromString(part)
            part = b""
            yield rec


def _finished_records(path: Path, wait_s: float = 60.0) -> list:
    """The records of an offline run file once its ``exit`` record is there: ``run.finish()`` can return
    before W&B's service has written the last records (the history of a resumed run was seen missing)."""
    import time

    deadline = time.monotonic() + wait_s
    while True:
        records = list(_wandb_records(path))
        if any(r.WhichOneof("record_type") == "exit" for r in records) or time.monotonic() > deadline:
            return records
        time.sleep(0.2)


def _wandb_run(run_dir: Path) -> tuple[list[dict], dict]:
    """History rows and the config of a W&B run, read from its offline run directories."""
    rows, config = [], {}
    for f in sorted(run_dir.glob("wandb/offline-run-*/run-*.wandb")):
        for rec in _finished_records(f):
            kind = rec.WhichOneof("record_type")
            if kind == "history":
                rows.append({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in rec.history.item})
            elif kind in ("config", "run"):
                updates = rec.config.update if kind == "config" else rec.run.config.update
                config.update({i.key: json.loads(i.value_json) for i in updates})
    return rows, config


def test_wandb_offline_run_records_history_config_samples_and_resumes_the_same_id(tiny_model_dir, tmp_path,
                                                                                  monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    out = tmp_path / "wb"
    train(load_config(None, _args(tiny_model_dir, out, "run.steps=2", "run.report_to=wandb")))
    run_id = json.loads((out / "trackers.json").read_text())["wandb"]
    assert cli_main(["train", "--resume", "auto", *_args(tiny_model_dir, out, "run.steps=4",
                                                         "run.report_to=wandb")]) == 0
    assert json.loads((out / "trackers.json").read_text())["wandb"] == run_id
    runs = sorted(out.glob("wandb/offline-run-*"))
    assert len(runs) == 2 and all(r.name.endswith(run_id) for r in runs)  # one W&B run, continued
    hist, config = _wandb_run(out)
    by_step: dict[int, dict] = {}
    for h in hist:
        by_step.setdefault(h["_step"], {}).update(h)
    rows = _rows(out)
    assert sorted(by_step) == [0, 1, 2, 3, 4]
    for r in rows:
        assert by_step[r["step"]]["eval/accuracy" if "reward/mean" not in r else "reward/mean"] == pytest.approx(
            r["eval/accuracy" if "reward/mean" not in r else "reward/mean"])
    assert by_step[4]["eval/accuracy"] == pytest.approx(rows[-1]["eval/accuracy"])
    assert by_step[1]["samples/_type"] == "table-file"  # the sample completions, as a W&B Table
    (table,) = runs[0].glob("files/media/table/samples_*.table.json")
    table = json.loads(table.read_text())
    assert table["columns"] == trackers.SAMPLE_COLUMNS and table["data"][0][0] == 1
    assert config["run"]["report_to"] == ["wandb"] and config["optim"]["schedule"] == "linear"  # the config


def _trackio_store(store: Path, monkeypatch) -> Path:
    """trackio reads $TRACKIO_DIR at import: point its modules at ``store``."""
    import sys

    monkeypatch.setenv("TRACKIO_DIR", str(store))
    for mod in [m for name, m in sys.modules.items() if name.startswith("trackio")]:
        for attr, sub in (("TRACKIO_DIR", ""), ("MEDIA_DIR", "media"), ("ARTIFACTS_DIR", "artifacts")):
            if isinstance(getattr(mod, attr, None), Path):
                monkeypatch.setattr(mod, attr, store / sub if sub else store)
    return store


def test_trackio_local_run_records_the_metrics(tiny_model_dir, tmp_path, monkeypatch):
    pytest.importorskip("trackio")
    store = _trackio_store(tmp_path / "trackio_store", monkeypatch)
    out = tmp_path / "tio"
    train(load_config(None, _args(tiny_model_dir, out, "run.steps=2", "run.report_to=trackio",
                                  "run.tracker_project=reasoner-test")))
    name = json.loads((out / "trackers.json").read_text())["trackio"]
    from trackio.sqlite_storage import SQLiteStorage

    logs = SQLiteStorage.get_logs("reasoner-test", name)
    got = {r["step"]: r for r in logs if "reward/mean" in r}
    rows = _rows(out)
    assert sorted(got) == [1, 2]
    assert got[2]["reward/mean"] == pytest.approx(rows[2]["reward/mean"])
    assert list(store.glob("reasoner-test*.db"))  # a local store, nothing sent anywhere


# ---------------------------------------------------------------- best checkpoint, early stopping


def test_early_stopping_keeps_the_best_and_writes_the_final_outputs(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    out = tmp_path / "es"  # lr 0: the held-out accuracy never improves on the evaluation before training
    summary = train(load_config(None, _args(tiny_model_dir, out, "run.steps=10", "run.eval_every=1", "optim.lr=0",
                                            "run.best_metric=eval/accuracy", "run.patience=2")))
    assert summary["stopped_early"] is True and summary["steps"] == 2
    assert summary["best_step"] == 0 and summary["best_value"] == summary["heldout_accuracy_before"]
    assert [r["step"] for r in _rows(out)] == [0, 1, 2]
    assert [c.name for c in checkpoint.list_checkpoints(out)] == ["step-0000002"]
    assert json.loads((out / "summary.json").read_text())["stopped_early"] is True
    assert json.loads((out / "best" / "best.json").read_text()) == {"metric": "eval/accuracy",
                                                                   "value": summary["best_value"], "step": 0}
    AutoModelForCausalLM.from_pretrained(out / "best")
    AutoModelForCausalLM.from_pretrained(out / "final")
    assert (out / "training_curves.png").is_file()


def test_best_checkpoint_follows_improvements_and_patience_survives_a_resume(tiny_model_dir, tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM

    import reasoner.build

    scripted = {0: .1, 1: .3, 2: .2, 3: .25, 4: .2, 5: .1, 6: .9}  # held-out accuracy by step
    monkeypatch.setattr(reasoner.build.TrainingEval, "__call__", lambda self, step: {"eval/accuracy": scripted[step]})
    out = tmp_path / "bm"
    args = ["run.eval_every=1", "run.best_metric=eval/accuracy", "run.patience=3"]
    s = train(load_config(None, _args(tiny_model_dir, out, "run.steps=2", *args)))
    assert s["stopped_early"] is False and (s["best_step"], s["best_value"]) == (1, .3)
    assert json.loads((out / "best" / "best.json").read_text()) == {"metric": "eval/accuracy", "value": .3, "step": 1}
    AutoModelForCausalLM.from_pretrained(out / "best")
    state = torch.load(out / "checkpoints/step-0000002" / checkpoint.STATE, weights_only=False)
    assert state["best"] == {"value": .3, "step": 1, "since": 1}
    # resumed for more steps: the count goes on from the checkpoint (.25 at 3, .2 at 4: three without a new best);
    # a count started afresh would take .25 as its best and never stop
    assert cli_main(["train", "--resume", "auto", *_args(tiny_model_dir, out, "run.steps=6", *args)]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["stopped_early"] is True and s["steps"] == 4 and (s["best_step"], s["best_value"]) == (1, .3)
    assert [r["step"] for r in _rows(out)] == [0, 1, 2, 3, 4]
    assert checkpoint.list_checkpoints(out)[-1].name == "step-0000004"


def test_best_observes_the_mode_and_counts_patience():
    from reasoner.best import Best

    b = Best("eval/loss", "min", patience=2)
    assert b.observe(0, {"eval/loss": 2.0}) and b.observe(1, {"eval/loss": 1.5})
    assert not b.observe(2, {"eval/loss": 1.7}) and not b.exhausted
    assert not b.observe(3, {"eval/loss": float("nan")}) and b.exhausted
    assert (b.value, b.step) == (1.5, 1)
    with pytest.raises(ConfigError, match="run.best_metric='eval/acc' is not a metric of the evaluation; it reports"):
        Best("eval/acc").observe(0, {"eval/accuracy": 1.0})
    assert not Best().observe(0, {"x": math.pi}) and Best().summary() == {}


def test_a_lora_run_keeps_its_best_adapter_and_still_trains_it(tiny_model_dir, tmp_path):
    peft = pytest.importorskip("peft")
    from transformers import AutoModelForCausalLM

    out = tmp_path / "lora"
    s = train(load_config(None, _args(tiny_model_dir, out, "run.steps=2", "run.eval_every=1", "model.lora_r=4",
                                      "run.best_metric=eval/accuracy", "run.best_mode=min")))
    assert (out / "best" / "adapter_config.json").is_file() and s["best_step"] is not None
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    peft.PeftModel.from_pretrained(base, out / "best")  # the best adapter on its base model
    AutoModelForCausalLM.from_pretrained(out / "final")  # the final model is still merged: the adapter lived on
