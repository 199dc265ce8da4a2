"""Data parallel on 2 CPU processes with gloo: after a DDP (or FSDP2) update the parameters are identical
on both ranks and equal a single-process update over the same global batch (also for
token_mean, whose per-rank token counts differ); the same for the critic of algo.advantage=gae
(its whitened GAE advantages, its value-loss update, its metrics); metrics reduce correctly;
torchrun runs the whole trainer with one set of outputs, with the critic too."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from reasoner import distributed
from reasoner.build import check_critic
from reasoner.config import ConfigError, OptimConfig, load_config
from reasoner.critic import Critic, CriticParams
from reasoner.kl import RewardKL
from reasoner.runtime import ProblemStream
from reasoner.types import Problem, Rollout
from reasoner.optim import Optimizer
from reasoner.update import UpdateBatch, UpdateParams, ppo_update

ROOT = Path(__file__).resolve().parents[1]
AGGS = ("seq_mean_token_mean", "token_mean", "seq_mean_token_sum_norm")
WORLD = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _global_batch(agg: str, model_dir: Path):
    """8 completions (4 problems x G=2); rank 1's rows are longer than rank 0's, so the
    per-rank token counts differ (3+4+2+1+... vs 4 each) and token_mean needs the global count."""
    cfg = load_config(None, [f"model.name={model_dir}", f"algo.loss_agg={agg}", "optim.grad_accum=2",
                             "optim.grad_clip=0", "sampling.max_new_tokens=4", "algo.beta=0.1"])
    g = torch.Generator().manual_seed(0)
    N, P, T = 8, 3, 4
    lengths = torch.tensor([3, 1, 2, 1, 4, 4, 4, 3])
    cmask = torch.arange(T)[None] < lengths[:, None]
    roll = Rollout(prompt_ids=torch.randint(3, 60, (N, P), generator=g), prompt_mask=torch.ones(N, P, dtype=torch.bool),
                   completion_ids=torch.randint(3, 60, (N, T), generator=g) * cmask, completion_mask=cmask,
                   logp=torch.zeros(N, T), truncated=torch.zeros(N, dtype=torch.bool), texts=[""] * N)
    adv = torch.tensor([1.0, -1.0, 0.5, -0.5, 1.0, -1.0, 2.0, -2.0])
    ref = torch.full((N, T), -2.0)
    return cfg, UpdateBatch(roll, adv, ref_logp=lambda: ref, beta=cfg.algo.beta)  # the KL in the loss


def _shard(batch: UpdateBatch, rank: int) -> UpdateBatch:
    n = batch.adv.shape[0] // WORLD
    rows = slice(rank * n, (rank + 1) * n)
    ref = batch.ref_logp()[rows]
    return UpdateBatch(batch.rollout.rows(range(rank * n, (rank + 1) * n)), batch.adv[rows], ref_logp=lambda: ref,
                       beta=batch.beta)


def _update(model_dir: Path, agg: str, rank: int | None, strategy: str = "ddp") -> dict[str, torch.Tensor]:
    """Parameters after one SGD update (no clipping: the step is proportional to the gradient)."""
    from reasoner.models import load_model

    cfg, batch = _global_batch(agg, model_dir)
    model, _ = load_model(cfg.model)
    policy = distributed.wrap(model, strategy) if rank is not None else model
    opt = Optimizer(model, cfg.optim, 1, make=lambda ps: torch.optim.SGD(ps, lr=1.0))  # after wrap: FSDP2 shards
    ppo_update(policy, opt, batch if rank is None else _shard(batch, rank), UpdateParams.of(cfg), torch.Generator())
    if strategy == "fsdp":
        return distributed.fsdp_full_state_dict(model)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


SCORES = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0, 0.0])


def _critic_state(critic: Critic) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in critic.state_dict().items()}


def _critic_update(model_dir: Path, rank: int | None) -> dict:
    """The critic's GAE advantages, then its parameters after 2 epochs of SGD on the clipped value loss
    (no gradient clipping: the step is proportional to the gradient), on the global batch (rank None)
    or on this rank's shard of it; with a k3 KL in the reward."""
    from reasoner.models import load_model

    cfg, batch = _global_batch("token_mean", model_dir)
    if rank is not None:
        batch = _shard(batch, rank)
    n = batch.adv.shape[0]
    scores = SCORES if rank is None else SCORES[rank * n:(rank + 1) * n]
    torch.manual_seed(0)
    critic = Critic(load_model(cfg.model)[0], CriticParams(epochs=2, value_clip=0.2))
    with torch.no_grad():
        critic.head.weight.normal_(0.0, 0.02, generator=torch.Generator().manual_seed(1))  # non-zero values
    critic.opt = Optimizer(critic, OptimConfig(grad_clip=0.0), 1, master=True,
                           make=lambda ps: torch.optim.SGD(ps, lr=0.1))
    start = _critic_state(critic)
    adv = critic.advantages(batch.rollout, scores, RewardKL(batch.ref_logp(), 0.1, "k3"))
    metrics = distributed.reduce_metrics(critic.update(batch.rollout, adv))
    return {"adv": adv, "metrics": metrics, "start": start, "params": _critic_state(critic)}


def _worker(rank: int, port: int, model_dir: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(WORLD),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    info = distributed.init(torch.device("cpu"))
    result = {agg: _update(Path(model_dir), agg, info.rank) for agg in AGGS}
    result["fsdp/token_mean"] = _update(Path(model_dir), "token_mean", info.rank, strategy="fsdp")
    result["critic"] = _critic_update(Path(model_dir), info.rank)
    row = {"step": 3, "reward/mean": float(rank), "length/max": float(10 + rank), "loss/ratio_min": 1.0 - rank,
           "tokens_per_s": 100.0, "time/update": 1.0 + rank, "only/rank1": 5.0, "note": "text",
           "source/a/count": 1.0 + rank}
    if rank == 0:
        del row["only/rank1"]
    result["metrics"] = distributed.reduce_metrics(row)
    result["scale"] = distributed.loss_scale(3.0 + 5 * rank, "token_mean")
    torch.save(result, Path(out) / f"rank{rank}.pt")
    distributed.shutdown()


@pytest.fixture(scope="module")
def ddp_results(tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    mp.spawn(_worker, args=(_free_port(), str(tiny_model_dir), str(out)), nprocs=WORLD, join=True)
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


@pytest.mark.parametrize("agg", [*AGGS, "fsdp/token_mean"])
def test_ddp_params_identical_across_ranks_and_equal_single_process(ddp_results, tiny_model_dir, agg):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single = _update(tiny_model_dir, agg.removeprefix("fsdp/"), rank=None)
    finally:
        torch.set_num_threads(threads)
    from reasoner.models import load_model

    start = load_model(load_config(None, [f"model.name={tiny_model_dir}"]).model)[0].state_dict()
    r0, r1 = ddp_results[0][agg], ddp_results[1][agg]
    moved = max(float((single[k] - start[k]).abs().max()) for k in single)
    assert moved > 1.0  # SGD with lr=1 and no clipping: the step is the raw gradient
    for k in single:
        if agg in AGGS:  # (the FSDP2 full state dict is gathered on rank 0 only)
            torch.testing.assert_close(r0[k], r1[k], rtol=0, atol=0)  # DDP keeps ranks bitwise equal
        # = the global batch up to float summation order (measured ~3e-7 of the largest step;
        # without the token_mean rescaling the token_mean error is ~9e-2 of it)
        torch.testing.assert_close(r0[k] - start[k], single[k] - start[k], rtol=0, atol=1e-5 * moved)


def test_ddp_critic_advantages_and_update_equal_single_process(ddp_results, tiny_model_dir):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single = _critic_update(tiny_model_dir, rank=None)
    finally:
        torch.set_num_threads(threads)
    r0, r1 = ddp_results[0]["critic"], ddp_results[1]["critic"]
    # GAE per row, whitening over the global batch's tokens: the ranks' shards concatenated
    for got, want in zip(zip(r0["adv"], r1["adv"]), single["adv"]):
        torch.testing.assert_close(torch.cat(got), want, rtol=0, atol=1e-6)
    assert float(single["adv"].adv.abs().max()) > 0.5
    start = single["start"]
    moved = max(float((single["params"][k] - start[k]).abs().max()) for k in start)
    assert moved > 0.05, moved
    for k in start:
        torch.testing.assert_close(r0["start"][k], start[k], rtol=0, atol=0)
        torch.testing.assert_close(r0["params"][k], r1["params"][k], rtol=0, atol=0)  # DDP: ranks bitwise equal
        torch.testing.assert_close(r0["params"][k] - start[k], single["params"][k] - start[k], rtol=0,
                                   atol=1e-6)
    # (measured: parameters within 1.2e-7 of a 0.32 step, advantages within 2.4e-7; without the loss
    # rescaling the parameters are 5.7e-2 off, with per-rank whitening the advantages are 1.0 off)
    # the global token-mean value loss (rescaled per rank, then averaged) and the global explained variance
    assert r0["metrics"] == r1["metrics"]
    for key in ("critic/value_loss", "critic/explained_variance"):
        assert r0["metrics"][key] == pytest.approx(single["metrics"][key], abs=1e-6), key


def test_critic_refuses_fsdp_under_torchrun():
    check_critic("gae", is_sharded=False)
    check_critic("grpo", is_sharded=True)
    with pytest.raises(ConfigError, match="run.parallel=fsdp with algo.advantage=gae"):
        check_critic("gae", is_sharded=True)


def test_metrics_are_reduced_over_ranks(ddp_results):
    m0, m1 = ddp_results[0]["metrics"], ddp_results[1]["metrics"]
    assert m0 == m1
    # mean of 0 and 1; max of 10 and 11; min of 1 and 0; sum of 100 and 100; max of the times;
    # a key only rank 1 has keeps its value; step and text pass through; counts add up: 1 + 2
    assert m0 == {"step": 3, "reward/mean": 0.5, "length/max": 11.0, "loss/ratio_min": 0.0,
                  "tokens_per_s": 200.0, "time/update": 2.0, "only/rank1": 5.0, "note": "text",
                  "source/a/count": 3.0}
    # token_mean scale = W * n_local / n_global: 2 * 3 / 11 on rank 0, 2 * 8 / 11 on rank 1
    assert ddp_results[0]["scale"] == pytest.approx(6 / 11) and ddp_results[1]["scale"] == pytest.approx(16 / 11)


def test_problem_stream_shards_are_the_global_batch_in_order():
    problems = [Problem(id=str(i), prompt=f"{i}+0=", answer=str(i)) for i in range(10)]
    whole = ProblemStream(problems, 4, seed=1)
    shards = [ProblemStream(problems, 4, seed=1, rank=r, world=2) for r in range(2)]
    for step in range(4):  # crosses an epoch boundary (10 problems, 4 per step)
        assert shards[0].batch(step) + shards[1].batch(step) == whole.batch(step)
    assert distributed.shard(list(range(6)), 1, 3) == [2, 3]
    with pytest.raises(ValueError, match="divisible"):
        ProblemStream(problems, 3, seed=1, rank=0, world=2)
    with pytest.raises(ConfigError, match="run.batch_size=3"):
        distributed.check_config(3, 2)


@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_torchrun_trains_with_one_set_of_outputs(tiny_model_dir, tmp_path, parallel):
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "reasoner",
           "train", f"model.name={tiny_model_dir}", f"run.out_dir={run}", "run.steps=2", "run.save_every=1",
           "run.batch_size=4", "sampling.group_size=2", "sampling.max_new_tokens=4", "data.eval_size=4",
           "data.synthetic_size=64", "run.threads=1", "run.progress=false", "run.log_samples_every=1",
           f"run.parallel={parallel}"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 1, 2]  # written once, by rank 0
    assert [c.name for c in sorted((run / "checkpoints").glob("step-*"))] == ["step-0000001", "step-0000002"]
    assert not list((run / "checkpoints").glob(".tmp-*"))
    state = torch.load(run / "checkpoints/step-0000002/trainer_state.pt", weights_only=False)
    assert len(state["rng"]) == 2  # both ranks' RNG states
    samples = (run / "samples.jsonl").read_text().splitlines()
    assert len(samples) == 2 * 2  # 2 steps x the first 2 problems, once (not once per rank)
    assert (run / "final" / "config.json").is_file() and (run / "summary.json").is_file()
    assert proc.stdout.count("held-out accuracy") == 1


def _torchrun(args: list[str]) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "reasoner",
           "train", *args]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def _critic_rows(run: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k.startswith(("step", "critic/", "reward/", "loss/"))} for r in rows]


@pytest.mark.slow
def test_torchrun_trains_and_resumes_the_critic(tiny_model_dir, tmp_path):
    """algo.advantage=gae under torchrun: 2 steps, then a resume to 3 equals 3 steps in one go (the KL
    sits in the reward, so the critic has something to learn from step 2 on even at accuracy 0)."""
    def args(run: Path) -> list[str]:
        return [f"model.name={tiny_model_dir}", f"run.out_dir={run}", "run.save_every=1", "run.batch_size=4",
                "sampling.group_size=2", "sampling.max_new_tokens=4", "data.eval_size=4", "data.synthetic_size=64",
                "run.threads=1", "run.progress=false", "run.eval_every=0", "algo.advantage=gae", "algo.kl_in=reward",
                "algo.beta=0.5", "optim.schedule=constant"]  # constant: run.steps=2 and 3 share their first steps
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    for cmd in ([*args(whole), "run.steps=3"], [*args(parts), "run.steps=2"]):
        proc = _torchrun(cmd)
        assert proc.returncode == 0, proc.stderr[-3000:]
    state = torch.load(parts / "checkpoints/step-0000002/trainer_state.pt", weights_only=False)
    assert set(state["critic"]) == {"model", "optimizer"}  # written once, by rank 0
    proc = _torchrun([*args(parts), "run.steps=3", "run.resume=auto"])  # every rank loads the critic
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("resumed from") == 2, proc.stdout[-2000:]
    rows = _critic_rows(parts)
    assert [r["step"] for r in rows] == [0, 1, 2, 3]
    assert rows[3]["critic/value_loss"] > 0, rows
    assert rows == _critic_rows(whole)
    after, ref = (torch.load(run / "checkpoints/step-0000003/trainer_state.pt", weights_only=False)["critic"]["model"]
                  for run in (parts, whole))
    assert any(not torch.equal(after[k], state["critic"]["model"][k]) for k in after)  # it trained on
    for k in after:
        torch.testing.assert_close(after[k], ref[k], rtol=0, atol=0)
