"""Resume never changes a run: it starts from the run's saved config.yaml (command-line overrides on
top, listed); a fresh run refuses another run's checkpoints unless run.overwrite=true; --resume auto
says what it did; samples.jsonl has no duplicate rows; stale checkpoint dirs go; SIGINT saves a
checkpoint at the step boundary and exits 130."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from reasoner import checkpoint
from reasoner.cli import main as cli_main
from reasoner.config import ConfigError, load_config
from reasoner.trainer import train

ROOT = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("keep_threads")  # conftest: torch threads restored after each test


def _args(model_dir, out, *extra):
    return [f"model.name={model_dir}", f"run.out_dir={out}", "run.progress=false", "run.threads=1",
            "run.batch_size=2", "sampling.group_size=2", "sampling.max_new_tokens=4", "data.eval_size=4",
            "data.synthetic_size=64", "run.eval_every=0", "algo.beta=0", *extra]


def _sample_steps(run: Path) -> list[int]:
    return [json.loads(x)["step"] for x in (run / "samples.jsonl").read_text().splitlines()]


def test_resume_reads_the_saved_config_and_lists_the_overrides(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "run"
    first = _args(tiny_model_dir, out, "run.steps=2", "run.save_every=1", "optim.lr=3e-3", "optim.warmup_steps=1",
                  "run.log_samples_every=1", "run.seed=5")
    assert cli_main(["train", *first]) == 0
    assert _sample_steps(out) == [1, 1, 2, 2]
    capsys.readouterr()
    # the README's form: only the directory (and a longer run) on the command line; the rest is the saved run's
    assert cli_main(["train", "--resume", "auto", f"run.out_dir={out}", "run.steps=3"]) == 0
    printed = capsys.readouterr().out
    line = next(x for x in printed.splitlines() if x.startswith("resuming with"))
    assert str(out / "config.yaml") in line and "run.steps: 2 -> 3" in line and "optim.lr" not in line
    assert "resumed from" in printed and "step-0000002" in printed
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["optim"]["lr"] == 3e-3 and saved["run"]["seed"] == 5 and saved["run"]["steps"] == 3
    assert saved["model"]["name"] == str(tiny_model_dir)
    assert _sample_steps(out) == [1, 1, 2, 2, 3, 3]  # no duplicates


def test_samples_past_the_resumed_step_are_dropped(tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    train(load_config(None, _args(tiny_model_dir, out, "run.steps=3", "run.save_every=1", "run.log_samples_every=1",
                                  "run.keep_checkpoints=3")))
    import shutil

    shutil.rmtree(out / "checkpoints" / "step-0000003")  # as if killed after step 3's samples, before its save
    train(load_config(None, _args(tiny_model_dir, out, "run.steps=3", "run.save_every=1", "run.log_samples_every=1",
                                  "run.resume=auto")))
    assert _sample_steps(out) == [1, 1, 2, 2, 3, 3]


def test_fresh_run_refuses_another_runs_checkpoints_unless_overwrite(tiny_model_dir, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    train(load_config(None, _args(tiny_model_dir, out, "run.steps=1", "run.log_samples_every=1")))
    assert checkpoint.list_checkpoints(out)
    monkeypatch.setattr("reasoner.build.load_model", lambda *a, **k: (_ for _ in ()).throw(AssertionError))
    with pytest.raises(ConfigError, match=r"holds another run's checkpoints .*--resume auto.*run\.overwrite=true"):
        train(load_config(None, _args(tiny_model_dir, out, "run.steps=1")))
    assert cli_main(["train", *_args(tiny_model_dir, out, "run.steps=1")]) == 2
    assert capsys.readouterr().err.strip().count("\n") == 0
    assert checkpoint.list_checkpoints(out)  # nothing lost
    monkeypatch.undo()
    train(load_config(None, _args(tiny_model_dir, out, "run.steps=2", "run.save_every=2", "run.overwrite=true",
                                  "run.log_samples_every=0")))
    assert [c.name for c in checkpoint.list_checkpoints(out)] == ["step-0000002"]
    assert not (out / "samples.jsonl").exists()  # the old run's samples went with it


def test_resume_auto_with_nothing_to_resume_says_so(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert cli_main(["train", "--resume", "auto", *_args(tiny_model_dir, out, "run.steps=1")]) == 0
    printed = capsys.readouterr().out
    assert f"no checkpoint in {out / 'checkpoints'}; starting a fresh run" in printed


def test_stale_temporary_and_half_deleted_checkpoints_are_removed_at_start(tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    root = out / "checkpoints"
    (root / ".tmp-step-0000004-12345").mkdir(parents=True)
    (root / ".tmp-step-0000004-12345" / "model.safetensors").write_bytes(b"x" * 1000)
    (root / "step-0000002").mkdir()  # half deleted: no trainer state
    (out / ".summary.json.tmp-12345").write_text("{")  # an atomic rewrite cut short
    train(load_config(None, _args(tiny_model_dir, out, "run.steps=1", "run.resume=auto")))
    assert sorted(p.name for p in root.iterdir()) == ["step-0000001"]
    assert not list(out.glob(".*.tmp-*"))


PLUGIN = """
from reasoner import verifiers
@verifiers.register("ends_even")
def _ends_even(completion, problem):
    ok = completion.strip()[-1:] in "02468" and completion.strip() != ""
    return verifiers.Verdict(float(ok), "correct" if ok else "wrong", completion, "")
"""


def test_sigint_saves_at_the_step_boundary_and_exits_130(tiny_model_dir, tmp_path):
    """Ctrl-C signals the whole process group: the trainer and its forked children (reference process,
    verifier workers). A plugin verifier keeps the math pool (its own subprocesses) out of this test."""
    out, plugin, data = tmp_path / "run", tmp_path / "ends_even.py", tmp_path / "train.jsonl"
    plugin.write_text(PLUGIN)
    data.write_text("".join(json.dumps({"problem": f"{a}+{a}=", "answer": "0", "verifier": "ends_even"}) + "\n"
                            for a in range(10, 60)))
    cmd = [sys.executable, "-m", "reasoner", "train",
           *_args(tiny_model_dir, out, "run.steps=400", "run.save_every=1000", "algo.beta=0.04",
                  "run.reference_process=process", f"run.plugins={plugin}", f"data.train={data}", f"data.eval={data}")]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "ignore"})
    metrics, deadline = out / "metrics.jsonl", time.monotonic() + 180
    while time.monotonic() < deadline and proc.poll() is None:
        if metrics.is_file() and len(metrics.read_text().splitlines()) >= 3:
            break
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()[1].decode()[-2000:]
    os.killpg(proc.pid, signal.SIGINT)  # as Ctrl-C does: the whole process group, children included
    stdout, stderr = proc.communicate(timeout=120)
    err = stderr.decode()
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err and "'error'" not in err, err[-3000:]
    ckpts = checkpoint.list_checkpoints(out)
    assert len(ckpts) == 1 and f"checkpoint saved in {ckpts[0]}" in err
    assert f"resume with: reasoner train --resume auto run.out_dir={out}" in err
    step = int(ckpts[0].name.split("-")[1])
    rows = [json.loads(x) for x in metrics.read_text().splitlines()]
    assert rows[-1]["step"] == step and step < 400
    assert all(r.get("verify/error_frac", 0) == 0 for r in rows)


def _torchrun(*args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "reasoner",
            "train", *args]


@pytest.mark.slow
@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_torchrun_sigkill_then_resume_auto_matches_the_uninterrupted_run(tiny_model_dir, tmp_path, parallel):
    """2 gloo processes. DDP: the optimizer state is replicated, so rank 0's copy is every rank's.
    FSDP2: the checkpoint holds the full weights and the full AdamW state gathered from both ranks'
    shards (torch.distributed.checkpoint.state_dict); on resume every rank reads them and keeps
    its own shards."""
    import psutil

    def args(out):
        return _args(tiny_model_dir, out, "run.batch_size=4", "run.steps=8", "run.save_every=2", "run.eval_every=2",
                     "run.keep_checkpoints=1", "run.seed=3", "optim.lr=3e-3", "algo.reward_weights={length: 1.0}",
                     f"run.parallel={parallel}")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    straight = subprocess.run(_torchrun(*args(tmp_path / "straight")), cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=300)
    assert straight.returncode == 0, straight.stderr[-2000:]
    cut = tmp_path / "killed"
    proc = subprocess.Popen(_torchrun(*args(cut)), cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    metrics, deadline = cut / "metrics.jsonl", time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if metrics.is_file() and any(json.loads(x)["step"] >= 3 for x in metrics.read_text().splitlines() if x):
            for child in psutil.Process(proc.pid).children(recursive=True):  # the ranks, in their own sessions
                child.kill()
            proc.kill()
            break
        time.sleep(0.01)
    proc.wait(timeout=30)
    assert [c.name for c in checkpoint.list_checkpoints(cut)] in (["step-0000002"], ["step-0000004"])
    resumed = subprocess.run(_torchrun("--resume", "auto", f"run.out_dir={cut}"), cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed from" in resumed.stdout
    a, b = ([json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines()]
            for d in (tmp_path / "straight", cut))
    assert [r["step"] for r in a] == [r["step"] for r in b] == list(range(9))
    wall = ("time/", "tokens_per_s")
    for x, y in zip(a, b):
        assert {k: v for k, v in x.items() if not k.startswith(wall)} == \
               {k: v for k, v in y.items() if not k.startswith(wall)}, f"step {x['step']} differs after resume"
