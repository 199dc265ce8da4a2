"""LoRA (peft): only adapters train, the reference is the base with adapters off (no copy),
adapter-only checkpoints resume, the final model is merged. Also the other memory savers:
gradient checkpointing gives the same update."""
from __future__ import annotations

import importlib.util

import pytest
import torch

from reasoner import lora, runtime
from reasoner.cli import main as cli_main
from reasoner.config import ConfigError, load_config
from reasoner.logprobs import completion_logp
from reasoner.models import load_model
from reasoner.types import Rollout
from reasoner.optim import Optimizer
from reasoner.update import UpdateBatch, UpdateParams, ppo_update

needs_peft = pytest.mark.skipif(importlib.util.find_spec("peft") is None, reason="peft is not installed")
CPU = torch.device("cpu")


def _cfg(model_dir, *extra):
    return load_config(None, [f"model.name={model_dir}", "sampling.max_new_tokens=4", "optim.grad_clip=0",
                              "algo.beta=0.1", *extra])


def _batch() -> UpdateBatch:
    g = torch.Generator().manual_seed(1)
    cmask = torch.arange(4)[None] < torch.tensor([4, 2, 3, 1])[:, None]
    roll = Rollout(prompt_ids=torch.randint(3, 60, (4, 3), generator=g), prompt_mask=torch.ones(4, 3, dtype=torch.bool),
                   completion_ids=torch.randint(3, 60, (4, 4), generator=g) * cmask, completion_mask=cmask,
                   logp=torch.zeros(4, 4), truncated=torch.zeros(4, dtype=torch.bool), texts=[""] * 4)
    ref = torch.full((4, 4), -2.0)
    return UpdateBatch(roll, torch.tensor([1.0, -1.0, 0.5, -0.5]), ref_logp=lambda: ref, beta=0.1)  # algo.beta


def _logp(model, batch: UpdateBatch) -> torch.Tensor:
    r = batch.rollout
    with torch.no_grad():
        return completion_logp(model, r.prompt_ids, r.prompt_mask, r.completion_ids, r.completion_mask)[0]


def _step(model, cfg, batch, lr=0.5):
    opt = Optimizer(model, cfg.optim, 1, make=lambda ps: torch.optim.SGD(ps, lr=lr))
    return ppo_update(model, opt, batch, UpdateParams.of(cfg), torch.Generator())


def test_lora_without_peft_fails_before_any_model_is_loaded(tiny_model_dir, tmp_path, monkeypatch, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "peft" else real(name, *a))
    monkeypatch.setattr("reasoner.build.load_model", lambda *a, **k: pytest.fail("a model was loaded"))
    args = ["train", f"model.name={tiny_model_dir}", f"run.out_dir={tmp_path}", "model.lora_r=8"]
    assert cli_main(args) == 2
    assert "model.lora_r=8 needs the package 'peft': pip install peft" in capsys.readouterr().err
    monkeypatch.undo()
    with pytest.raises(ConfigError, match="model.lora_dropout"):
        lora.check_config(load_config(None, ["model.lora_r=4", "model.lora_dropout=1.5"]).model)


@needs_peft
def test_lora_trains_adapters_only_and_reference_is_the_base(tiny_model_dir):
    cfg = _cfg(tiny_model_dir, "model.lora_r=4", "model.lora_targets=q_proj,v_proj")
    base, _ = load_model(cfg.model)
    base_logp = _logp(base, _batch())
    policy = runtime.prepare_policy(load_model(cfg.model)[0], cfg.model, cfg.run.threads, CPU)[0]
    ref = runtime.make_reference(policy, cfg.algo.beta)
    assert isinstance(ref, lora.AdapterOffReference) and ref.model is policy  # no second copy
    frozen = {k: v.clone() for k, v in policy.named_parameters() if not v.requires_grad}
    trainable = [k for k, v in policy.named_parameters() if v.requires_grad]
    assert trainable and all("lora_" in k for k in trainable)

    stats = _step(policy, cfg, _batch())
    assert stats["update/skipped"] == 0 and stats["update/grad_norm"] > 0
    for k, v in policy.named_parameters():
        if k in frozen:
            torch.testing.assert_close(v, frozen[k], rtol=0, atol=0)  # base weights never move
    moved = _logp(policy, _batch())
    assert (moved - base_logp).abs().max() > 1e-4  # the adapters changed the policy ...
    torch.testing.assert_close(_logp(ref, _batch()), base_logp)  # ... the reference is still the base
    assert policy.training  # the reference call restored the train mode ppo_update set


@needs_peft
def test_bf16_mixed_lora_keeps_no_float32_copy_of_the_base(tiny_model_dir):
    """Only the adapters train, and they are made after the cast: no loaded float32 weight is kept for them."""
    cfg = _cfg(tiny_model_dir, "model.lora_r=4", "model.precision=bf16-mixed")
    policy, prec, start = runtime.prepare_policy(load_model(cfg.model)[0], cfg.model, cfg.run.threads, CPU)
    assert prec.master and start == {}
    w = Optimizer(policy, cfg.optim, 1, master=prec.master, start=start).weights
    assert w.names and all("lora_" in n for n in w.names)
    assert all(m.dtype == torch.float32 for m in w.params)


@needs_peft
def test_adapter_checkpoint_resumes_and_final_model_is_merged(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    cfg = _cfg(tiny_model_dir, "model.lora_r=4")
    policy = runtime.prepare_policy(load_model(cfg.model)[0], cfg.model, cfg.run.threads, CPU)[0]
    _step(policy, cfg, _batch())
    want = _logp(policy, _batch())
    lora.save_adapter(policy, tmp_path / "ckpt")
    assert (tmp_path / "ckpt" / lora.ADAPTER_FILE).is_file() and not (tmp_path / "ckpt" / "model.safetensors").exists()

    fresh = runtime.prepare_policy(load_model(cfg.model)[0], cfg.model, cfg.run.threads, CPU)[0]
    from reasoner import checkpoint

    checkpoint.load_weights(fresh, tmp_path / "ckpt", torch.float32, CPU)
    torch.testing.assert_close(_logp(fresh, _batch()), want)

    lora.save_merged(fresh, tmp_path / "final")
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "final")
    assert not any("lora_" in k for k in merged.state_dict())
    torch.testing.assert_close(_logp(merged, _batch()), want, rtol=1e-4, atol=1e-5)
    assert (tmp_path / "final" / "adapter" / lora.ADAPTER_FILE).is_file()


@needs_peft
def test_lora_run_end_to_end_with_resume(tiny_model_dir, tmp_path):
    args = ["train", f"model.name={tiny_model_dir}", f"run.out_dir={tmp_path / 'run'}", "run.progress=false",
            "run.batch_size=2", "sampling.group_size=2", "sampling.max_new_tokens=4", "data.eval_size=4",
            "data.synthetic_size=64", "run.log_samples_every=0", "run.save_every=1", "model.lora_r=4",
            "model.gradient_checkpointing=true", "run.threads=1"]
    assert cli_main([*args, "run.steps=1"]) == 0
    assert (tmp_path / "run/checkpoints/step-0000001" / lora.ADAPTER_FILE).is_file()
    assert cli_main([*args, "run.steps=2", "--resume", "auto"]) == 0
    assert (tmp_path / "run/checkpoints/step-0000002" / lora.ADAPTER_FILE).is_file()
    assert (tmp_path / "run/final/model.safetensors").is_file()


def test_gradient_checkpointing_gives_the_same_update(tiny_model_dir):
    cfg = _cfg(tiny_model_dir)
    plain = runtime.prepare_policy(load_model(cfg.model)[0], cfg.model, cfg.run.threads, CPU)[0]
    ckpt_cfg = _cfg(tiny_model_dir, "model.gradient_checkpointing=true")
    saved = runtime.prepare_policy(load_model(ckpt_cfg.model)[0], ckpt_cfg.model, ckpt_cfg.run.threads, CPU)[0]
    on = lambda m: getattr(m, "is_activation_checkpointing", None) or m.is_gradient_checkpointing  # noqa: E731
    assert on(saved) and not on(plain)
    a, b = _step(plain, cfg, _batch()), _step(saved, ckpt_cfg, _batch())
    assert a["update/grad_norm"] > 0
    assert b["update/grad_norm"] == pytest.approx(a["update/grad_norm"], rel=1e-5)
    for (k, p), q in zip(plain.named_parameters(), saved.parameters()):
        torch.testing.assert_close(q, p, rtol=1e-5, atol=1e-6, msg=k)
