"""vLLM backend, the pure parts (no vLLM needed): names, LoRA merging, sampling parameters and seeds, result
conversion, TIS, the top_p like-with-like weights, start-up checks. The engine: tests/test_vllm_engine.py."""
from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace as NS

import pytest
import torch

from reasoner.sampler import SamplingParams
from reasoner.sampler.vllm import (EngineParams, engine_kwargs, engine_weights, outputs_to_rollout, probe_gap,
                                   refresh_shared_weights, request_seed, tis_weights, to_vllm_params, vllm_param_name)


def _params(**kw) -> EngineParams:
    return EngineParams(**{"seed": 0, "memory_fraction": 0.2, "model": None, "kinds": "add,sub", **kw})


# ---------------------------------------------------------------- parameter names and sampling parameters


@pytest.mark.parametrize("name, expected", [
    ("model.layers.0.self_attn.q_proj.weight", "model.layers.0.self_attn.q_proj.weight"),
    ("base_model.model.model.layers.0.self_attn.q_proj.base_layer.weight", "model.layers.0.self_attn.q_proj.weight"),
    ("_orig_mod.lm_head.weight", "lm_head.weight"),
    ("base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight", None),
    ("base_model.model.lm_head.modules_to_save.default.weight", None),
])
def test_vllm_param_name(name, expected):
    assert vllm_param_name(name) == expected


def test_engine_weights_sends_tied_weights_once():
    from transformers import Qwen2Config, Qwen2ForCausalLM

    cfg = Qwen2Config(vocab_size=11, hidden_size=8, intermediate_size=16, num_hidden_layers=1, num_attention_heads=2,
                      num_key_value_heads=1, tie_word_embeddings=True)
    model = Qwen2ForCausalLM(cfg)
    names = [n for n, _ in engine_weights(model)]
    assert len(names) == len(set(names))
    assert "model.embed_tokens.weight" in names and "lm_head.weight" not in names  # tied: one tensor
    assert len(names) == len(list(model.parameters()))


def test_to_vllm_params_maps_one_to_one():
    p = SamplingParams(n=8, temperature=0.7, top_p=0.9, max_new_tokens=64, seed=100)
    assert to_vllm_params(p, index=3) == {"n": 8, "temperature": 0.7, "top_p": 0.9, "max_tokens": 64,
                                          "seed": request_seed(100, 3, 8), "logprobs": 0, "skip_special_tokens": True}
    assert to_vllm_params(SamplingParams(temperature=0.0))["seed"] is None
    with pytest.raises(ValueError, match="max_new_tokens"):
        to_vllm_params(SamplingParams(max_new_tokens=0))


def test_request_seeds_never_share_a_random_stream():
    # vLLM seeds completion j of a request seed + j; the step seeds of a run are consecutive (reasoner.seeds)
    n, prompts = 8, 16
    streams = [request_seed(step, i, n) + j for step in range(1000, 1050) for i in range(prompts) for j in range(n)]
    assert len(set(streams)) == len(streams)  # with seed + index those 6400 completions would share 72 streams
    assert request_seed(7, 2, n) == request_seed(7, 2, n) and 0 <= request_seed(2**40, 99, n) < 2**63


def test_engine_source_reuses_a_checkpoint_or_saves_a_copy(tmp_path):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from reasoner.config import ModelConfig
    from reasoner.models.tiny import build_tokenizer
    from reasoner.sampler.vllm import engine_source

    tok = build_tokenizer()
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=8, intermediate_size=16, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1)
    fresh = Qwen2ForCausalLM(cfg)  # built in memory: no checkpoint directory to point the engine at
    path, tok_path = engine_source(fresh, tok, _params())
    assert path == tok_path
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in Path(path).iterdir()}
    loaded = Qwen2ForCausalLM.from_pretrained(path)
    assert engine_source(loaded, tok, _params()) == (path, path)  # loaded from disk: that directory, no copy
    # evaluation without a trainer model: the configured checkpoint
    assert engine_source(None, tok, _params(model=ModelConfig(name=path))) == (path, path)


# ---------------------------------------------------------------- RequestOutput -> Rollout


def _completion(tokens, logps, finish, text):
    # vLLM: CompletionOutput.logprobs[t] = {token_id: Logprob(logprob=...)}; with logprobs=0 only the sampled token
    return NS(token_ids=tokens, logprobs=[{t: NS(logprob=lp)} for t, lp in zip(tokens, logps)],
              finish_reason=finish, text=text)


def test_outputs_to_rollout_pads_and_flags():
    outs = [NS(outputs=[_completion([5, 6, 1], [-0.1, -0.2, -0.3], "stop", "ab"),
                        _completion([7], [-1.5], "length", "c")]),
            NS(outputs=[_completion([8, 9], [-0.4, -0.5], "length", "de"),
                        _completion([1], [-0.05], "stop", "")])]
    roll = outputs_to_rollout(outs, [[3, 4], [2]], pad_id=0, n=2)
    # group-major rows; prompts left padded to P=2, completions right padded to T=3
    assert roll.prompt_ids.tolist() == [[3, 4], [3, 4], [0, 2], [0, 2]]
    assert roll.prompt_mask.tolist() == [[True, True]] * 2 + [[False, True]] * 2
    assert roll.completion_ids.tolist() == [[5, 6, 1], [7, 0, 0], [8, 9, 0], [1, 0, 0]]
    assert roll.lengths.tolist() == [3, 1, 2, 1]
    torch.testing.assert_close(roll.logp, torch.tensor([[-0.1, -0.2, -0.3], [-1.5, 0, 0], [-0.4, -0.5, 0],
                                                        [-0.05, 0, 0]]))
    assert roll.truncated.tolist() == [False, True, True, False]
    assert roll.texts == ["ab", "c", "de", ""]


def test_outputs_to_rollout_rejects_bad_results():
    one = [NS(outputs=[_completion([5], [-0.1], "stop", "a")])]
    with pytest.raises(ValueError, match="expected n=2"):
        outputs_to_rollout(one, [[3]], pad_id=0, n=2)
    with pytest.raises(ValueError, match="2 prompts"):
        outputs_to_rollout(one, [[3], [4]], pad_id=0, n=1)
    no_lp = [NS(outputs=[NS(token_ids=[5], logprobs=None, finish_reason="stop", text="a")])]
    with pytest.raises(ValueError, match="logprobs=0"):
        outputs_to_rollout(no_lp, [[3]], pad_id=0, n=1)


# ---------------------------------------------------------------- truncated importance sampling


def test_tis_weights_by_hand():
    trainer = torch.tensor([[-1.0, -2.0, -0.5]])
    sampler = torch.tensor([[-1.5, -1.0, -3.0]])
    mask = torch.tensor([[True, True, False]])
    # exp(-1 + 1.5) = e^0.5 = 1.6487 (under the cap 2); exp(-2 + 1) = e^-1 = 0.3679; masked -> 0
    torch.testing.assert_close(tis_weights(trainer, sampler, mask, cap=2.0),
                               torch.tensor([[math.exp(0.5), math.exp(-1.0), 0.0]]))
    # cap 1.2 truncates e^0.5 to 1.2; the masked entry (ratio e^2.5) stays 0, not the cap
    torch.testing.assert_close(tis_weights(trainer, sampler, mask, cap=1.2), torch.tensor([[1.2, math.exp(-1.0), 0.0]]))


def test_tis_weights_bad_input():
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="cap"):
        tis_weights(x, x, x.bool(), cap=0.0)
    with pytest.raises(ValueError, match="shapes"):
        tis_weights(x, torch.zeros(2, 4), x.bool(), cap=2.0)


def test_probe_gap():
    # |(-0.1) - (-0.15)| = 0.05, |(-2.0) - (-1.0)| = 1.0 -> 1.0
    assert probe_gap([-0.1, -2.0], torch.tensor([-0.15, -1.0])) == pytest.approx(1.0)


def test_missing_vllm_is_a_clear_error(monkeypatch):
    import builtins

    from reasoner.sampler import vllm as backend

    real_import = builtins.__import__

    def no_vllm(name, *a, **k):
        if name == "vllm":
            raise ImportError("no vllm")
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_vllm)
    with pytest.raises(ImportError, match="pip install"):
        backend._require_vllm()


    with pytest.raises(ImportError, match="scripts/test_vllm.sh"):
        backend._require_vllm()


def test_backend_checks_at_start(monkeypatch):
    import importlib.util

    from reasoner import config_checks
    from reasoner.errors import ConfigError

    config_checks.backend("transformers", "fsdp")  # the transformers sampler gathers nothing: fine
    with pytest.raises(ConfigError, match="run.parallel=fsdp"):
        config_checks.backend("vllm", "fsdp")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "vllm" else real(name, *a))
    with pytest.raises(ConfigError, match="scripts/test_vllm.sh"):
        config_checks.backend("vllm", "ddp")


def test_engine_kwargs_per_platform():
    assert engine_kwargs(_params(), on_cpu=True) == {"enforce_eager": True, "kv_cache_memory_bytes": 1 << 30}
    assert engine_kwargs(_params(), on_cpu=False) == {"enforce_eager": False, "gpu_memory_utilization": 0.2}
    assert engine_kwargs(_params(eager=False, cpu_kv_cache_bytes=5, max_model_len=9), on_cpu=True) == {
        "enforce_eager": False, "kv_cache_memory_bytes": 5, "max_model_len": 9}


# ---------------------------------------------------------------- LoRA merged for the push; tied layers re-processed


def test_engine_weights_merge_lora_into_a_copy():
    pytest.importorskip("peft")
    from peft import LoraConfig, get_peft_model
    from transformers import Qwen2Config, Qwen2ForCausalLM

    cfg = Qwen2Config(vocab_size=11, hidden_size=8, intermediate_size=16, num_hidden_layers=1, num_attention_heads=2,
                      num_key_value_heads=1)
    torch.manual_seed(0)
    base = Qwen2ForCausalLM(cfg)
    q_before = base.model.layers[0].self_attn.q_proj.weight.detach().clone()
    model = get_peft_model(base, LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj"]))
    layer = model.base_model.model.model.layers[0].self_attn.q_proj
    with torch.no_grad():
        layer.lora_B["default"].weight.normal_()  # B = 0 at init: make the adapter change something
    sent = dict(engine_weights(model))
    assert not any("lora_" in k or "base_layer" in k for k in sent)
    assert set(sent) == {vllm_param_name(n) for n, _ in base.named_parameters() if "lora_" not in n}
    # merged = W + (alpha / r) * B @ A = W + 2 * B @ A
    expected = q_before + 2.0 * layer.lora_B["default"].weight @ layer.lora_A["default"].weight
    torch.testing.assert_close(sent["model.layers.0.self_attn.q_proj.weight"], expected)
    torch.testing.assert_close(layer.base_layer.weight, q_before)  # the trainer's weight is left as it was
    assert not layer.merged


def test_refresh_shared_weights_reprocesses_only_tied_layers():
    calls = []

    class Method:
        def process_weights_after_loading(self, layer):
            calls.append(layer.tag)

    def layer(tag, weight):
        m = torch.nn.Module()
        m.weight, m.quant_method, m.tag = weight, Method(), tag
        return m

    shared = torch.nn.Parameter(torch.ones(3, 2))
    root = torch.nn.ModuleDict({"embed": layer("embed", shared), "head": layer("head", shared),
                                "proj": layer("proj", torch.nn.Parameter(torch.ones(2, 2))),
                                "packed": layer("packed", torch.nn.Parameter(torch.empty(0)))})
    assert refresh_shared_weights(root) == 2
    assert sorted(calls) == ["embed", "head"]  # the unshared layer and the emptied (repacked) one are left alone


# ---------------------------------------------------------------- top_p: the trainer's side of the weights


class _FixedLogits(torch.nn.Module):
    """A "model" whose next-token logits are log([.5, .3, .2]) at every position."""

    def __init__(self):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))

    def forward(self, input_ids, logits_to_keep, **kw):
        logits = torch.tensor([0.5, 0.3, 0.2]).log().expand(input_ids.shape[0], logits_to_keep, 3)
        return NS(logits=logits)


def test_processed_trainer_logp_is_renormalised_after_top_p():
    from reasoner.sampler.vllm import processed_trainer_logp

    roll = outputs_to_rollout([NS(outputs=[_completion([0, 1], [0.0, 0.0], "stop", ""),
                                           _completion([2], [0.0], "stop", "")])], [[1]], pad_id=0, n=2)
    got = processed_trainer_logp(_FixedLogits(), roll, SamplingParams(top_p=0.7), rows=1)
    # top_p 0.7 keeps .5 (mass before it 0) and .3 (mass before it .5 < .7), drops .2 (.8 >= .7);
    # renormalised over .8: .625, .375; token 2 was dropped: -inf; the padded position: 0
    torch.testing.assert_close(got, torch.tensor([[math.log(0.625), math.log(0.375)], [-math.inf, 0.0]]))
    full = processed_trainer_logp(_FixedLogits(), roll, SamplingParams(), rows=1)  # no truncation: softmax itself
    torch.testing.assert_close(full, torch.tensor([[math.log(0.5), math.log(0.3)], [math.log(0.2), 0.0]]))


def test_old_logp_weights_compare_like_with_like_under_top_p():
    from reasoner.build import _old_logp
    from reasoner.config import load_config
    from reasoner.engine import PlainEngine

    cfg = load_config(None, ["sampling.backend=vllm", "sampling.vllm_tis_cap=2", "sampling.top_p=0.7",
                             "sampling.temperature=1"])
    roll = outputs_to_rollout([NS(outputs=[_completion([0, 1], [math.log(0.625), math.log(0.375)], "stop", "")])],
                              [[1]], pad_id=0, n=1)  # the engine's processed log-probs
    old, weights = _old_logp(_FixedLogits(), cfg, PlainEngine())(roll)
    # old: the full tempered distribution (the PPO ratio's): log .5, log .3
    torch.testing.assert_close(old, torch.tensor([[math.log(0.5), math.log(0.3)]]))
    # weights: trainer processed / engine processed = 1, not .5 / .625 = .8 (the kept mass, a bias)
    torch.testing.assert_close(weights, torch.ones(1, 2))
    no_top_p = load_config(None, ["sampling.backend=vllm", "sampling.vllm_tis_cap=2"])
    assert _old_logp(_FixedLogits(), no_top_p, PlainEngine()).matched is None  # nothing truncated: old itself
