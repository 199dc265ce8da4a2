"""The reference runner: a forked reference process gives the inline log-probs, fails loudly, and
leaves the trained run unchanged."""
from __future__ import annotations

import json
import os
import signal

import pytest
import torch

from reasoner import reference, runtime
from reasoner.config import ConfigError, load_config
from reasoner.models import load_model
from reasoner.trainer import train


def _roll(tok, n_rows=6, T=5, seed=0):
    """A ragged batch of prompts and sampled-looking completions (ids within the vocabulary)."""
    from reasoner.types import Rollout

    g = torch.Generator().manual_seed(seed)
    enc = tok(["12+3=", "7-5=", "100+200="] * (n_rows // 3), return_tensors="pt", padding=True,
              add_special_tokens=False)
    cids = torch.randint(3, len(tok), (n_rows, T), generator=g)
    lengths = torch.tensor([5, 1, 3, 5, 2, 4])[:n_rows]
    cmask = torch.arange(T)[None] < lengths[:, None]
    return Rollout(enc["input_ids"], enc["attention_mask"].bool(), cids, cmask, torch.zeros(n_rows, T),
                   torch.zeros(n_rows, dtype=torch.bool), [""] * n_rows)


def test_process_gives_the_inline_log_probs_and_closes(run_args):
    cfg = load_config(None, run_args())
    model, tok = load_model(cfg.model)
    ref = runtime.make_reference(model, cfg.algo.beta)
    roll = _roll(tok)
    want = reference.InlineReference(ref, cfg.sampling.temperature).start(roll)()  # [6, 5]
    proc = reference.ReferenceProcess(ref, cfg.sampling.temperature)
    try:
        got = [proc.start(roll)() for _ in range(2)]  # the child serves request after request
        proc.start(_roll(tok, seed=1))  # an answer nobody waits for is skipped by the next one
        got.append(proc.start(roll)())
    finally:
        proc.close()
    for g in got:
        torch.testing.assert_close(g, want, rtol=0, atol=1e-6)
    assert not proc._proc.is_alive() and proc._proc.exitcode == 0


def test_pending_calls_once_and_records_the_wait():
    calls = []
    p = reference.Pending(lambda: calls.append(1) or torch.ones(2, 3))
    torch.testing.assert_close(p(), torch.ones(2, 3))
    p()
    assert calls == [1] and p.waited >= 0.0


def test_an_error_in_the_child_is_raised_with_its_traceback(run_args):
    cfg = load_config(None, run_args())
    model, tok = load_model(cfg.model)
    proc = reference.ReferenceProcess(runtime.make_reference(model, cfg.algo.beta), cfg.sampling.temperature)
    try:
        bad = _roll(tok)
        bad.completion_ids.fill_(10_000)  # beyond the vocabulary: the embedding lookup fails in the child
        with pytest.raises(RuntimeError, match=r"(?s)reference process failed.*IndexError"):
            proc.start(bad)()
        assert proc.start(_roll(tok))().shape == (6, 5)  # and it still serves
    finally:
        proc.close()


def test_a_dead_child_is_a_clear_error(run_args):
    cfg = load_config(None, run_args())
    model, tok = load_model(cfg.model)
    proc = reference.ReferenceProcess(runtime.make_reference(model, cfg.algo.beta), cfg.sampling.temperature)
    os.kill(proc._proc.pid, signal.SIGKILL)
    proc._proc.join(5)
    with pytest.raises(RuntimeError, match=r"reference process \(pid \d+\) died.*run.reference_process=inline"):
        proc.start(_roll(tok))()
    proc.close()


def test_choice_of_runner(run_args):
    model, _ = load_model(load_config(None, run_args()).model)
    ref = runtime.make_reference(model, load_config(None, run_args()).algo.beta)
    assert isinstance(reference.make_runner(None, "auto", 1.0, "cpu"), reference.NoReference)  # beta = 0
    assert reference.make_runner(None, "auto", 1.0, "cpu").start(None)() is None
    assert isinstance(reference.make_runner(ref, "inline", 1.0, "cpu"), reference.InlineReference)
    if len(os.sched_getaffinity(0)) > 1:  # auto: a small CPU model with a spare core gets the child
        auto = reference.make_runner(ref, "auto", 1.0, "cpu")
        assert isinstance(auto, reference.ReferenceProcess)
        auto.close()
    not_module = reference.make_runner(lambda **k: None, "auto", 1.0, "cpu")  # LoRA's view
    assert isinstance(not_module, reference.InlineReference)
    with pytest.raises(ConfigError, match="run.reference_process=process needs a CPU run.*auto, inline"):
        reference.make_runner(ref, "process", 1.0, "cuda")
    with pytest.raises(ConfigError, match="run.reference_process=.thread. is not valid; choose one of: auto, process, inline"):
        load_config(None, run_args("run.reference_process=thread"))


def test_a_run_is_the_same_with_the_reference_in_a_process(run_args, learnable_problems, tmp_path):
    """Same seeds, same tokens: every logged loss and KL equal with either runner."""
    rows, data = {}, learnable_problems  # rewards vary within groups: the policy moves away from the reference
    for choice in ("inline", "process"):
        out = tmp_path / choice
        train(load_config(None, run_args("run.steps=3", "algo.beta=0.1", "run.eval_every=0", "run.save_every=0",
                                         "optim.lr=3e-3", f"data.train={data}", f"data.eval={data}",
                                         f"run.out_dir={out}", f"run.reference_process={choice}")))
        rows[choice] = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()][1:]
    for a, b in zip(rows["inline"], rows["process"], strict=True):
        for key in ("loss/kl", "loss/policy", "update/grad_norm", "reward/mean", "length/mean"):
            torch.testing.assert_close(torch.tensor(b[key]), torch.tensor(a[key]), rtol=0, atol=1e-7)
    assert abs(rows["inline"][0]["loss/kl"]) < 1e-6 < rows["inline"][-1]["loss/kl"]  # policy = reference, then not


def test_the_child_exits_when_its_parent_is_killed(tiny_model_dir):
    """A SIGKILLed trainer leaves no reference process behind (it watches its parent)."""
    import subprocess
    import sys
    import time

    code = f"""
import reasoner, torch
from reasoner import reference, runtime
from reasoner.config import load_config
from reasoner.models import load_model
cfg = load_config(None, ["model.name={tiny_model_dir}"])
model, _ = load_model(cfg.model)
proc = reference.ReferenceProcess(runtime.make_reference(model, cfg.algo.beta), cfg.sampling.temperature)
print(proc._proc.pid, flush=True)
time.sleep(60)
"""
    parent = subprocess.Popen([sys.executable, "-c", "import time\n" + code], stdout=subprocess.PIPE, text=True,
                              stderr=subprocess.DEVNULL)
    child = int(parent.stdout.readline())
    assert _alive(child)
    parent.send_signal(signal.SIGKILL)
    parent.wait(10)
    deadline = time.monotonic() + 10  # it looks at its parent once a second
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(child), f"reference process {child} outlived its killed parent"


def _alive(pid: int) -> bool:
    """True while pid runs (a zombie waiting for init to reap it counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(") ", 1)[1][0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False
