"""SIGINT under torchrun (2 gloo processes on CPU): the ranks agree at the step boundary, all save one
checkpoint and exit 130 with the resume line; ``--resume auto`` then continues and every later metric
row equals the uninterrupted run's. The signal goes to the launcher (as a terminal's Ctrl-C does: the
ranks run in their own sessions), to one rank only, or to every rank."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from reasoner import checkpoint
from test_resume_config import _args

ROOT = Path(__file__).resolve().parents[1]
WALL = ("time/", "tokens_per_s")  # time columns differ between runs
RANK_MAIN = """import os, sys
from reasoner.cli import main
rc = main(sys.argv[1:])
open(os.path.join({out!r}, "rc." + os.environ["RANK"]), "w").write(str(rc))
sys.exit(rc)
"""  # ``python -m reasoner``, recording each rank's exit code (torchrun does not report it after its own SIGINT)

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("keep_threads")]


def _torchrun(script: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script),
            "train", *args]


def _run_args(model_dir, out: Path, parallel: str) -> list[str]:
    return _args(model_dir, out, "run.batch_size=4", "run.steps=14", "run.save_every=1000", "run.eval_every=3",
                 "run.seed=3", "optim.lr=3e-3", "algo.reward_weights={length: 1.0}", f"run.parallel={parallel}")


def _rows(out: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(x).items() if not k.startswith(WALL)}
            for x in (out / "metrics.jsonl").read_text().splitlines()]


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


@pytest.fixture(scope="module")
def straight(tiny_model_dir, tmp_path_factory):
    """The uninterrupted runs, one per strategy, made when first asked for."""
    done: dict[str, Path] = {}

    def get(parallel: str) -> Path:
        if parallel not in done:
            base = tmp_path_factory.mktemp(f"straight_{parallel}")
            script = base / "rank_main.py"
            script.write_text(RANK_MAIN.format(out=str(base)))
            proc = subprocess.run(_torchrun(script, *_run_args(tiny_model_dir, base / "run", parallel)), cwd=ROOT,
                                  env=_env(), capture_output=True, text=True, timeout=400)
            assert proc.returncode == 0, proc.stderr[-3000:]
            done[parallel] = base / "run"
        return done[parallel]
    return get


def _ranks(launcher_pid: int) -> dict[int, int]:
    """{rank: pid} of the worker processes torchrun started."""
    import psutil

    out = {}
    for child in psutil.Process(launcher_pid).children(recursive=True):
        rank = child.environ().get("RANK")
        if rank is not None and "rank_main.py" in " ".join(child.cmdline()):
            out[int(rank)] = child.pid
    return out


def _interrupt(cmd: list[str], out: Path, target: str) -> subprocess.CompletedProcess:
    """Start ``cmd``, send SIGINT to ``target`` once step 3 is logged, and wait for it to end."""
    proc = subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    metrics, deadline = out / "metrics.jsonl", time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if metrics.is_file() and any(json.loads(x)["step"] >= 3 for x in metrics.read_text().splitlines() if x):
            break
        time.sleep(0.02)
    assert proc.poll() is None, proc.communicate()[1][-3000:]
    ranks = _ranks(proc.pid)
    assert sorted(ranks) == [0, 1]
    pids = {"launcher": [proc.pid], "rank 1": [ranks[1]], "every rank": list(ranks.values())}[target]
    for pid in pids:
        os.kill(pid, signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=300)
    return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)


@pytest.mark.parametrize("parallel,target", [("ddp", "launcher"), ("ddp", "rank 1"), ("ddp", "every rank"),
                                             ("fsdp", "launcher")])
def test_sigint_under_torchrun_saves_once_exits_130_and_resume_matches(tiny_model_dir, tmp_path, straight,
                                                                       parallel, target):
    out, script = tmp_path / "run", tmp_path / "rank_main.py"
    script.write_text(RANK_MAIN.format(out=str(tmp_path)))
    cut = _interrupt(_torchrun(script, *_run_args(tiny_model_dir, out, parallel)), out, target)
    rcs = {r: (tmp_path / f"rc.{r}").read_text() for r in (0, 1)}
    assert rcs == {0: "130", 1: "130"}, cut.stderr[-3000:]
    assert f'File "{script}' not in cut.stderr and f'File "{ROOT / "reasoner"}' not in cut.stderr  # no rank traceback
    (ckpt,) = checkpoint.list_checkpoints(out)  # one checkpoint, at the step every rank stopped after
    step = int(ckpt.name.split("-")[1])
    assert 3 <= step < 14 and _rows(out)[-1]["step"] == step
    assert (f"checkpoint saved in {ckpt}; resume with: torchrun (the same options) -m reasoner train --resume auto "
            f"run.out_dir={out}") in cut.stderr
    assert f"[rank 1] interrupted at step {step} of 14 with every rank" in cut.stderr
    for r in (0, 1):
        (tmp_path / f"rc.{r}").unlink()
    resumed = subprocess.run(_torchrun(script, "--resume", "auto", f"run.out_dir={out}"), cwd=ROOT, env=_env(),
                             capture_output=True, text=True, timeout=400)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resumed from {ckpt} at step {step}" in resumed.stdout
    a, b = _rows(straight(parallel)), _rows(out)
    assert [r["step"] for r in b] == list(range(15))
    for x, y in zip(a, b):
        assert x == y, f"step {x['step']} differs after the resume"
