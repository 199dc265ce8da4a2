"""A full disk while writing any of the run's files is one line naming the file and the fix (free
space, or move the run directory), with no traceback, and nothing lost: the last checkpoint stays
valid and ``--resume auto`` goes on. ENOSPC is simulated by a failing ``open``; the ``real_full_disk``
tests fill a small tmpfs (they need root and skip otherwise)."""
from __future__ import annotations

import builtins
import errno
import io
import json
import os
import sqlite3
import subprocess
from pathlib import Path

import pytest

from reasoner import checkpoint, trackers, writes
from reasoner.cli import main as cli_main
from reasoner.metrics import MetricsLog, log_samples, truncate_samples

pytestmark = pytest.mark.usefixtures("keep_threads")


def _train(model_dir, out: Path, *extra: str) -> int:
    return cli_main(["train", f"model.name={model_dir}", f"run.out_dir={out}", "run.progress=false", "run.threads=1",
                     "run.batch_size=2", "sampling.group_size=2", "sampling.max_new_tokens=3", "data.eval_size=4",
                     "data.synthetic_size=32", "run.eval_every=0", "algo.beta=0", "run.save_every=1", *extra])


def _one_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("reasoner: error: ") and "\n" not in err and "Traceback" not in err, err
    return err


@pytest.fixture
def full_disk(monkeypatch):
    """``full_disk(name, after)``: opening the file ``name`` (or its temporary twin of an atomic write)
    for writing fails with ENOSPC, without a file name (as a failed ``write`` reports it), after
    ``after`` opens that worked."""
    real = io.open

    def install(name: str, after: int = 0) -> None:
        opened = []

        def fake_open(file, mode="r", *a, **k):
            base = os.path.basename(os.fspath(file)) if isinstance(file, (str, os.PathLike)) else ""
            if any(c in mode for c in "wax+") and (base == name or base.startswith(f".{name}.tmp-")):
                opened.append(base)
                if len(opened) > after:
                    raise OSError(errno.ENOSPC, "No space left on device")
            return real(file, mode, *a, **k)
        monkeypatch.setattr(io, "open", fake_open)
        monkeypatch.setattr(builtins, "open", fake_open)
    return install


def _steps(out: Path) -> list[int]:
    return [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines() if x.strip()]


# which file, how many of its writes succeed, the checkpoints left (run.steps=2, one saved every step)
FILES = [("metrics.jsonl", 2, ["step-0000001"]), ("training_metrics.csv", 1, ["step-0000001", "step-0000002"]),
         ("samples.jsonl", 1, ["step-0000001"]), ("training_curves.png", 0, ["step-0000001", "step-0000002"]),
         ("summary.json", 0, ["step-0000001", "step-0000002"]), ("config.yaml", 0, [])]


@pytest.mark.parametrize("name,after,left", FILES)
def test_a_full_disk_on_any_run_file_is_one_line_naming_it(tiny_model_dir, tmp_path, capsys, full_disk, name,
                                                           after, left):
    out = tmp_path / "run"
    full_disk(name, after)
    assert _train(tiny_model_dir, out, "run.steps=2", "run.log_samples_every=1", "run.keep_checkpoints=3") == 2
    err = _one_error(capsys)
    assert f"could not write {out / name}: no space left on the device" in err
    assert "free some space" in err and "run.out_dir" in err and "--resume auto" in err
    ckpts = checkpoint.list_checkpoints(out)
    assert [c.name for c in ckpts] == left
    for c in ckpts:  # each one complete: the state loads
        assert checkpoint.load_state(c)["step"] == int(c.name.split("-")[1])


def test_after_a_full_disk_the_resume_continues(tiny_model_dir, tmp_path, capsys, full_disk, monkeypatch):
    out = tmp_path / "run"
    full_disk("metrics.jsonl", after=2)  # step 2's row fails: step 1's checkpoint is the last
    assert _train(tiny_model_dir, out, "run.steps=3", "run.log_samples_every=1") == 2
    capsys.readouterr()
    monkeypatch.undo()  # space freed
    assert _train(tiny_model_dir, out, "run.steps=3", "run.log_samples_every=1", "run.resume=auto") == 0
    assert _steps(out) == [0, 1, 2, 3]
    assert [json.loads(x)["step"] for x in (out / "samples.jsonl").read_text().splitlines()] == [1, 1, 2, 2, 3, 3]


def test_a_full_disk_on_resume_leaves_config_and_samples_whole(tiny_model_dir, tmp_path, capsys, full_disk):
    """config.yaml (the resume reads it) and samples.jsonl (no checkpoint holds it) are replaced atomically."""
    out = tmp_path / "run"
    assert _train(tiny_model_dir, out, "run.steps=2", "run.log_samples_every=1") == 0
    config, samples = (out / "config.yaml").read_text(), (out / "samples.jsonl").read_text()
    full_disk("config.yaml")
    assert _train(tiny_model_dir, out, "run.steps=3", "run.resume=auto") == 2
    assert f"could not write {out / 'config.yaml'}: no space left" in _one_error(capsys)
    assert (out / "config.yaml").read_text() == config
    full_disk("samples.jsonl")
    with pytest.raises(writes.WriteError, match="samples.jsonl: no space left"):
        truncate_samples(out / "samples.jsonl", 1)
    assert (out / "samples.jsonl").read_text() == samples
    assert not list(out.glob(".*.tmp-*"))


class _FullTracker:
    """A tracker whose writes fail from step 2 on: with an OSError, or as SQLite reports a full disk."""

    extra = module = "json"
    name, append_only, sqlite = "fulltest", False, False

    def open(self, ctx):
        self.path = ctx.run_dir / "fulltest"

    def log(self, step, values):
        if step >= 2 and self.sqlite:
            e = sqlite3.OperationalError("database or disk is full")
            e.sqlite_errorcode = sqlite3.SQLITE_FULL
            raise e
        if step >= 2:
            raise OSError(errno.ENOSPC, "No space left on device")

    def samples(self, step, rows):
        pass

    def close(self):
        pass


@pytest.mark.parametrize("sqlite", [False, True])
def test_a_tracker_on_a_full_disk_is_one_line_naming_its_files(tiny_model_dir, tmp_path, capsys, monkeypatch,
                                                               sqlite):
    monkeypatch.setitem(trackers.TRACKERS._items, "fulltest", _FullTracker)
    monkeypatch.setattr(_FullTracker, "sqlite", sqlite)
    out = tmp_path / "run"
    assert _train(tiny_model_dir, out, "run.steps=3", "run.report_to=fulltest") == 2
    err = _one_error(capsys)
    assert f"could not write the fulltest tracker's files in {out / 'fulltest'}: no space left on the device" in err
    assert [c.name for c in checkpoint.list_checkpoints(out)] == ["step-0000001"]


def test_write_error_names_the_file_and_keeps_other_reasons():
    e = writes.write_error(Path("/x/metrics.jsonl"), OSError(errno.EACCES, "Permission denied"))
    assert str(e).startswith("could not write /x/metrics.jsonl: Permission denied; the last checkpoint is intact: "
                             "free some space")
    torch_full = RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")
    assert writes.is_full(OSError(errno.EDQUOT, "quota"), Path("/")) and not writes.is_full(torch_full, Path("/"))


# ---------------------------------------------------------------- a real full disk: a small tmpfs


@pytest.fixture
def tmpfs(tmp_path):
    """``tmpfs(mib)``: a tmpfs of that size mounted in tmp_path (skip without root or mount rights)."""
    mounted = []

    def mount(mib: int) -> Path:
        where = tmp_path / f"disk{len(mounted)}"
        where.mkdir()
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={mib}m", "tmpfs", str(where)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
        mounted.append(where)
        return where
    yield mount
    for where in mounted:
        subprocess.run(["umount", "-l", str(where)], check=False)


def _fill(disk: Path) -> None:
    """Write a filler file until the tmpfs is full."""
    with open(disk / "filler", "wb", buffering=0) as f:  # unbuffered: nothing left to flush at close
        try:
            while True:
                f.write(b"\0" * (1 << 16))
        except OSError as e:
            assert e.errno == errno.ENOSPC


def test_real_full_disk_small_files(tmpfs):
    disk = tmpfs(1)
    (disk / "summary.json").write_text('{"old": true}')
    log = MetricsLog(disk, [{"step": 0, "x": 1.0}])
    _fill(disk)
    with pytest.raises(writes.WriteError, match=f"could not write {disk / 'metrics.jsonl'}: no space left on the "
                                                r"device \(0 MiB free\)"):
        log.log({"step": 1, "x": 2.0, "pad": "y" * 100_000})
    with pytest.raises(writes.WriteError, match="training_metrics.csv: no space left"):
        log.write_csv()
    with pytest.raises(writes.WriteError, match="samples.jsonl: no space left"):
        log_samples(disk / "samples.jsonl", 1, ["p" * 100_000], ["c"], [1.0], ["correct"], 1)
    with pytest.raises(writes.WriteError, match="summary.json: no space left"):
        writes.replace_text(disk / "summary.json", "x" * 100_000)
    assert (disk / "summary.json").read_text() == '{"old": true}'  # the old one stays whole
    with pytest.raises(writes.WriteError, match="training_curves.png: no space left"):
        log.plot()
    db = sqlite3.connect(disk / "store.db")  # trackio's store is SQLite
    with pytest.raises(sqlite3.Error) as e:
        db.execute("create table t (x)")
        db.executemany("insert into t values (?)", [("z" * 4096,)] * 1000)
        db.commit()
    assert writes.is_full(e.value, disk)


def test_real_full_disk_during_training_then_resume_after_freeing(tiny_model_dir, tmpfs, capsys):
    """A 16 MiB tmpfs holds one checkpoint of the tiny model (9 MiB: weights and AdamW moments), not two:
    the second save fails (torch's zip writer: 'unexpected pos'); after the tmpfs grows, the resume goes on."""
    disk = tmpfs(16)
    out = disk / "run"
    assert _train(tiny_model_dir, out, "run.steps=3", "run.keep_checkpoints=1") == 2
    err = _one_error(capsys)
    assert f"could not write checkpoint {out / 'checkpoints' / 'step-0000002'}: no space left on the device" in err
    assert [c.name for c in checkpoint.list_checkpoints(out)] == ["step-0000001"]
    assert not list((out / "checkpoints").glob(".tmp-*"))
    subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)
    assert _train(tiny_model_dir, out, "run.steps=3", "run.keep_checkpoints=1", "run.resume=auto") == 0
    assert _steps(out) == [0, 1, 2, 3] and (out / "final" / "config.json").is_file()


def test_real_full_disk_tensorboard_is_one_line_without_the_writer_threads_traceback(tmpfs, monkeypatch):
    pytest.importorskip("tensorboard")
    import threading

    from reasoner.cli import quiet_full_disk_threads

    printed = []  # what would print a thread's traceback
    monkeypatch.setattr(threading, "excepthook", lambda args: printed.append(args.exc_type))
    disk = tmpfs(1)
    sinks = trackers.make(["tensorboard"], disk, {"a": 1}, "p")
    sinks.open(0)
    _fill(disk)
    with quiet_full_disk_threads():
        with pytest.raises(writes.WriteError) as e:
            for step in range(1, 10_000):  # TensorBoard's event writer thread dies; the next write reports it
                sinks.log({"step": step, **{f"m{i}": float(i) for i in range(50)}})
        other = threading.Thread(target=lambda: 1 / 0)  # any other thread's error is still printed
        other.start()
        other.join()
    assert str(e.value).startswith(f"could not write the tensorboard tracker's files in {disk / 'tensorboard'}: "
                                   "no space left on the device")
    assert printed == [ZeroDivisionError]
