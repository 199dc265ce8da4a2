"""model.precision: bf16-mixed keeps float32 masters (small updates survive), equals the fp32 update
within bf16's precision, checkpoints its masters, and resolves `auto` by hardware and model size."""
from __future__ import annotations

import json

import pytest
import torch

from reasoner import precision
from reasoner.config import ConfigError, load_config
from reasoner.optim import Optimizer
from reasoner.types import Rollout
from reasoner.update import UpdateBatch, UpdateParams, ppo_update

CPU = torch.device("cpu")


def _sgd(lr):
    return lambda ps: torch.optim.SGD(ps, lr=lr)


def _one_weight(value: float, dtype) -> torch.nn.Module:
    m = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        m.weight.fill_(value)
    return m.to(dtype)


def _steps(model, master: bool, n: int, grad: float, lr: float = 1.0):
    cfg = load_config(None, ["optim.grad_clip=0"]).optim
    opt = Optimizer(model, cfg, n, master=master, make=_sgd(lr))
    for _ in range(n):
        model.weight.grad = torch.full_like(model.weight, grad)
        opt.step()
    return opt


def test_small_updates_accumulate_in_the_masters_and_are_lost_in_pure_bf16():
    # w = 1.0; SGD with lr 1 and gradient 2^-10 (exact in bf16) moves w by -2^-10 per step. bf16 has
    # 8 significant bits: just below 1 its spacing is 2^-8, so 1 - 2^-10 rounds back to 1.0 every time
    # (pure bf16 never moves). The float32 master goes to 1 - 11 * 2^-10 = 0.9892578125 after 11 steps,
    # and the module holds its bf16 rounding: the neighbours are 0.98828125 (0.0009765625 away) and
    # 0.9921875 (0.0029296875 away), so 0.98828125.
    pure = _one_weight(1.0, torch.bfloat16)
    _steps(pure, master=False, n=11, grad=2 ** -10)
    torch.testing.assert_close(pure.weight.float(), torch.tensor([[1.0]]), rtol=0, atol=0)
    mixed = _one_weight(1.0, torch.bfloat16)
    opt = _steps(mixed, master=True, n=11, grad=2 ** -10)
    torch.testing.assert_close(opt.weights.params[0], torch.tensor([[0.9892578125]]), rtol=0, atol=0)
    torch.testing.assert_close(mixed.weight.float(), torch.tensor([[0.98828125]]), rtol=0, atol=0)


def test_master_gradients_are_each_steps_own_in_a_reused_buffer():
    # w = 1.0 (bf16), SGD lr 1 on the float32 master, grad-clip off. Step 1: gradient 2^-4, two
    # micro-batches collected (2^-4 + 2^-4 = 2^-3), so w = 1 - 2^-3 = 0.875. Step 2: one micro-batch of
    # 2^-5: w = 0.875 - 2^-5 = 0.84375. A stale sum carried over from step 1 would give 0.875 - 2^-3 - 2^-5.
    # Both values are exact in bf16 and in float32.
    model = _one_weight(1.0, torch.bfloat16)
    opt = Optimizer(model, load_config(None, ["optim.grad_clip=0"]).optim, 2, master=True, make=_sgd(1.0))
    for g in (2 ** -4, 2 ** -4):
        model.weight.grad = torch.full_like(model.weight, g)
        opt.collect()
    first = opt.weights.params[0].grad.data_ptr()
    opt.step()
    torch.testing.assert_close(model.weight.float(), torch.tensor([[0.875]]), rtol=0, atol=0)
    model.weight.grad = torch.full_like(model.weight, 2 ** -5)
    opt.collect()
    assert opt.weights.params[0].grad.data_ptr() == first  # the same float32 buffer, overwritten
    opt.step()
    torch.testing.assert_close(model.weight.float(), torch.tensor([[0.84375]]), rtol=0, atol=0)


def test_masters_start_from_the_loaded_float32_weights_not_their_bf16_rounding():
    # Loaded w = 1 + 2^-9 = 1.001953125 (float32). bf16 spacing just above 1 is 2^-7 = 0.0078125, so the
    # module holds 1.0 (0.001953125 away; 1.0078125 is 0.005859375 away). SGD, lr 1, gradient
    # -(2^-8 - 2^-10) = -0.0029296875: the master goes to 1.0048828125, whose nearest bf16 value is
    # 1.0078125 (0.0029296875 away; 1.0 is 0.0048828125 away). A master started from the rounding
    # (1.0) would reach 1.0029296875 and the module would stay at 1.0.
    model = _one_weight(1 + 2 ** -9, torch.float32)
    start = precision.loaded_float32(model, precision.resolve("bf16-mixed", CPU, 0))
    model.to(torch.bfloat16)
    opt = Optimizer(model, load_config(None, ["optim.grad_clip=0"]).optim, 1, master=True, make=_sgd(1.0), start=start)
    torch.testing.assert_close(opt.weights.params[0], torch.tensor([[1.001953125]]), rtol=0, atol=0)
    torch.testing.assert_close(model.weight.float(), torch.tensor([[1.0]]), rtol=0, atol=0)
    model.weight.grad = torch.full_like(model.weight, -(2 ** -8 - 2 ** -10))
    opt.step()
    torch.testing.assert_close(opt.weights.params[0], torch.tensor([[1.0048828125]]), rtol=0, atol=0)
    torch.testing.assert_close(model.weight.float(), torch.tensor([[1.0078125]]), rtol=0, atol=0)
    assert precision.loaded_float32(model, precision.resolve("fp32", CPU, 0)) == {}  # fp32: nothing kept


def test_a_bf16_mixed_policy_s_masters_are_the_model_as_loaded(tiny_model_dir):
    from reasoner.models import load_model
    from reasoner.runtime import prepare_policy

    cfg = load_config(None, [f"model.name={tiny_model_dir}", "model.precision=bf16-mixed", "run.threads=1"])
    loaded = dict(load_model(cfg.model)[0].named_parameters())
    model, p, start = prepare_policy(load_model(cfg.model)[0], cfg.model, cfg.run.threads, CPU)
    w = Optimizer(model, cfg.optim, 1, master=p.master, start=start).weights
    assert w.copies and len(w.params) == len(loaded)
    for name, m in zip(w.names, w.params):
        torch.testing.assert_close(m, loaded[name].detach(), rtol=0, atol=0)  # exact, not bf16-rounded
        assert dict(model.named_parameters())[name].dtype == torch.bfloat16


def test_fp32_has_no_copies_and_mixed_copies_only_low_precision_weights():
    fp32 = _one_weight(1.0, torch.float32)
    assert Optimizer(fp32, load_config().optim, 1, master=True).weights.params[0] is fp32.weight
    bf = _one_weight(1.0, torch.bfloat16)
    w = Optimizer(bf, load_config().optim, 1, master=True).weights
    assert w.copies and w.params[0].dtype == torch.float32 and w.params[0] is not bf.weight


def test_masters_round_trip_through_the_optimizer_state():
    a = _one_weight(1.0, torch.bfloat16)
    opt = _steps(a, master=True, n=3, grad=2 ** -10)  # master 1 - 3 * 2^-10 = 0.9970703125
    b = _one_weight(1.0, torch.bfloat16)
    fresh = Optimizer(b, load_config(None, ["optim.grad_clip=0"]).optim, 3, master=True, make=_sgd(1.0))
    fresh.load_state_dict(opt.state_dict())
    torch.testing.assert_close(fresh.weights.params[0], torch.tensor([[0.9970703125]]), rtol=0, atol=0)
    # the module reads the master's bf16 rounding: 0.99609375 (0.0009765625 away) rather than 1.0 (0.0029296875)
    torch.testing.assert_close(b.weight.float(), torch.tensor([[0.99609375]]), rtol=0, atol=0)
    with pytest.raises(ValueError, match="float32 master weights"):
        Optimizer(_one_weight(1.0, torch.float32), load_config().optim, 1, make=_sgd(1.0)).load_state_dict(
            opt.state_dict())


def _batch() -> UpdateBatch:
    g = torch.Generator().manual_seed(3)
    cmask = torch.arange(5)[None] < torch.tensor([5, 3, 4, 2, 5, 1])[:, None]
    roll = Rollout(prompt_ids=torch.randint(3, 60, (6, 4), generator=g), prompt_mask=torch.ones(6, 4, dtype=torch.bool),
                   completion_ids=torch.randint(3, 60, (6, 5), generator=g) * cmask, completion_mask=cmask,
                   logp=torch.zeros(6, 5), truncated=torch.zeros(6, dtype=torch.bool), texts=[""] * 6)
    return UpdateBatch(roll, torch.tensor([1.0, -1.0, 0.5, -0.5, 0.8, -0.8]))


def _update(model_dir, prec: str) -> list[torch.Tensor]:
    """Parameter deltas of one SGD update (lr 1, no clipping) on the tiny model at `prec`."""
    from reasoner.models import load_model
    from reasoner.runtime import prepare_policy

    cfg = load_config(None, [f"model.name={model_dir}", f"model.precision={prec}", "algo.beta=0",
                             "optim.grad_clip=0", "sampling.max_new_tokens=5", "run.threads=1"])
    model, _ = load_model(cfg.model)
    model, p, start = prepare_policy(model, cfg.model, cfg.run.threads, CPU)
    opt = Optimizer(model, cfg.optim, 1, master=p.master, make=_sgd(1.0), start=start)
    before = [m.detach().clone() for m in opt.weights.params]
    ppo_update(model, opt, _batch(), UpdateParams.of(cfg), torch.Generator())
    return [m.detach() - b for m, b in zip(opt.weights.params, before)]


def test_one_bf16_mixed_update_equals_the_fp32_update_within_bf16_precision(tiny_model_dir):
    # The same SGD step in both: the update is -grad. bf16 compute carries ~3 significant digits
    # (8-bit mantissa, relative rounding 2^-9 per operation, compounded over 4 layers), so the
    # whole update agrees to a few percent in norm and points the same way.
    ref, mixed = _update(tiny_model_dir, "fp32"), _update(tiny_model_dir, "bf16-mixed")
    a, b = torch.cat([x.flatten() for x in ref]), torch.cat([x.flatten() for x in mixed])
    assert a.norm() > 0
    assert float((b - a).norm() / a.norm()) < 0.05
    assert float(torch.nn.functional.cosine_similarity(a, b, 0)) > 0.998


def test_auto_picks_by_hardware_and_size(monkeypatch):
    monkeypatch.setattr(precision, "bf16_fast", lambda device: True)
    assert precision.resolve("auto", CPU, 800_000).name == "fp32"  # overhead-bound: no gain
    assert precision.resolve("auto", CPU, 135_000_000) == precision.Precision("bf16-mixed", torch.bfloat16, True)
    assert precision.resolve("auto", CPU, 135_000_000, sharded=True).name == "fp32"
    monkeypatch.setattr(precision, "bf16_fast", lambda device: False)
    assert precision.resolve("auto", CPU, 135_000_000).name == "fp32"
    assert precision.resolve("bf16", CPU, 10) == precision.Precision("bf16", torch.bfloat16, False)


def test_bad_precision_choices_name_the_key():
    with pytest.raises(ConfigError, match="model.precision='fp8' is not valid; choose one of: auto, fp32, bf16-mixed"):
        load_config(None, ["model.precision=fp8"])
    with pytest.raises(ConfigError, match="model.dtype was replaced by model.precision"):
        load_config(None, ["model.dtype=bfloat16"])
    with pytest.raises(ConfigError, match="fsdp"):
        precision.check("bf16-mixed", sharded=True)


def test_bf16_mixed_run_checkpoints_masters_and_resumes_exactly(run_args, tmp_path):
    from reasoner.trainer import train

    args = run_args("model.precision=bf16-mixed", "run.save_every=2", "algo.reward_weights={length: 1.0}",
                    "optim.lr=1e-3")
    full = train(load_config(None, args + ["run.steps=4"]))
    assert full["precision"] == "bf16-mixed"
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    state = torch.load(tmp_path / "run" / "checkpoints" / "step-0000002" / "trainer_state.pt", weights_only=False)
    assert state["optim"]["masters"] and all(m.dtype == torch.float32 for m in state["optim"]["masters"])
    train(load_config(None, args + ["run.steps=4", "run.resume=" + str(tmp_path / "run" / "checkpoints" / "step-0000002"),
                                    f"run.out_dir={tmp_path / 'resumed'}"]))
    again = [json.loads(x) for x in (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()]
    for a, b in zip(rows[3:], again[3:]):
        assert {k: v for k, v in a.items() if not k.startswith(("time/", "tokens_per_s"))} == \
               {k: v for k, v in b.items() if not k.startswith(("time/", "tokens_per_s"))}
