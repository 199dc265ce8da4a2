"""After a resume the trackers do not get twice the steps they already have: W&B and trackio keep
every row sent (``append_only``), so the steps an interrupted run logged after its last checkpoint
are not sent again (the last step each got is in trackers.json); TensorBoard gets them again and
hides the old events after the checkpoint (``purge_step``). Read back with each package's reader,
offline; a package that is not installed is left out."""
from __future__ import annotations

import importlib.util
import json
import shutil
from collections import Counter

import pytest

from reasoner import trackers
from reasoner.cli import main as cli_main
from test_trackers import _args, _rows, _trackio_store, _wandb_run

pytestmark = pytest.mark.usefixtures("keep_threads")


class _Recorder:
    """A tracker that keeps the steps it was sent."""

    def __init__(self, name: str, append_only: bool):
        self.name, self.append_only, self.got, self.tables = name, append_only, [], []

    def open(self, ctx):
        pass

    def log(self, step, values):
        self.got.append(step)

    def samples(self, step, rows):
        self.tables.append(step)

    def close(self):
        pass


def _session(run_dir, start: int, steps: range) -> tuple[_Recorder, _Recorder]:
    sinks = (_Recorder("wandb", True), _Recorder("tensorboard", False))
    t = trackers.Trackers(list(sinks), run_dir, {}, "p")
    t.open(start)
    for step in steps:
        t.samples(step, [])
        t.log({"step": step, "reward/mean": 0.5})
    return sinks


def test_a_resume_sends_an_append_only_tracker_only_the_steps_it_lacks(tmp_path):
    wb, tb = _session(tmp_path, 0, range(0, 6))  # killed after step 5; its last checkpoint: step 3
    assert json.loads((tmp_path / trackers.IDS).read_text())[trackers.LOGGED] == {"wandb": 5}
    wb, tb = _session(tmp_path, 3, range(4, 7))  # resumed at 3, killed again after step 6
    assert (wb.got, wb.tables) == ([6], [6]) and tb.got == [4, 5, 6]
    wb, tb = _session(tmp_path, 4, range(5, 9))  # resumed at 4: it has 6 already
    assert wb.got == [7, 8] and tb.got == [5, 6, 7, 8]
    wb, tb = _session(tmp_path, 0, range(0, 2))  # a fresh run sends everything
    assert wb.got == [0, 1]


KINDS = [k for k in ("tensorboard", "wandb", "trackio") if importlib.util.find_spec(k) is not None]


@pytest.mark.skipif(not KINDS, reason="no tracker package installed (tensorboard, wandb, trackio)")
def test_steps_logged_after_the_last_checkpoint_are_in_each_tracker_once(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    if "trackio" in KINDS:
        import trackio  # noqa: F401 - its modules are repointed below

        _trackio_store(tmp_path / "trackio_store", monkeypatch)
    out, report = tmp_path / "run", f"run.report_to={','.join(KINDS)}"
    common = [report, "run.tracker_project=reasoner-test", "run.keep_checkpoints=3"]
    assert cli_main(["train", *_args(tiny_model_dir, out, "run.steps=4", *common)]) == 0
    for p in (out / "checkpoints" / "step-0000004", out / "final"):  # as if killed after step 4 was logged
        shutil.rmtree(p)
    assert cli_main(["train", "--resume", "auto", *_args(tiny_model_dir, out, "run.steps=6", *common)]) == 0
    rows = {r["step"]: r for r in _rows(out)}
    assert sorted(rows) == list(range(7))
    sent = {kind: READERS[kind](out) for kind in KINDS}  # kind -> [(step, reward/mean) of every row it holds]
    for kind, got in sent.items():
        assert sorted(Counter(s for s, _ in got).items()) == [(s, 1) for s in range(1, 7)], kind
        assert [v for _, v in sorted(got)] == pytest.approx([rows[s]["reward/mean"] for s in range(1, 7)]), kind


def _tensorboard(out) -> list[tuple[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(out / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    return [(e.step, e.value) for e in acc.Scalars("reward/mean")]


def _wandb(out) -> list[tuple[int, float]]:
    hist, _ = _wandb_run(out)
    return [(h["_step"], h["reward/mean"]) for h in hist if "reward/mean" in h]


def _trackio(out) -> list[tuple[int, float]]:
    from trackio.sqlite_storage import SQLiteStorage

    name = json.loads((out / trackers.IDS).read_text())["trackio"]
    return [(r["step"], r["reward/mean"]) for r in SQLiteStorage.get_logs("reasoner-test", name) if "reward/mean" in r]


READERS = {"tensorboard": _tensorboard, "wandb": _wandb, "trackio": _trackio}
