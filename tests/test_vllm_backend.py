"""vLLM backend: the pure parts on CPU (names, parameters, result conversion, TIS), the engine on GPU."""
from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace as NS

import pytest
import torch

from reasoner.sampler import SamplingParams
from reasoner.sampler.vllm import (engine_weights, outputs_to_rollout, probe_gap, tis_weights, to_vllm_params,
                                   vllm_param_name)


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
    assert to_vllm_params(p, index=3) == {"n": 8, "temperature": 0.7, "top_p": 0.9, "max_tokens": 64, "seed": 103,
                                          "logprobs": 0, "skip_special_tokens": True}
    assert to_vllm_params(SamplingParams(temperature=0.0))["seed"] is None
    with pytest.raises(ValueError, match="max_new_tokens"):
        to_vllm_params(SamplingParams(max_new_tokens=0))


def test_engine_source_reuses_a_checkpoint_or_saves_a_copy(tmp_path):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from reasoner.config import Config
    from reasoner.models.tiny import build_tokenizer
    from reasoner.sampler.vllm import engine_source

    tok = build_tokenizer()
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=8, intermediate_size=16, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1)
    fresh = Qwen2ForCausalLM(cfg)  # built in memory: no checkpoint directory to point the engine at
    path, tok_path = engine_source(fresh, tok, Config())
    assert path == tok_path
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in Path(path).iterdir()}
    loaded = Qwen2ForCausalLM.from_pretrained(path)
    assert engine_source(loaded, tok, Config()) == (path, path)  # loaded from disk: that directory, no copy
    eval_cfg = Config()
    eval_cfg.model.name = path  # evaluation without a trainer model: the configured checkpoint
    assert engine_source(None, tok, eval_cfg) == (path, path)


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


# ---------------------------------------------------------------- the engine (GPU + vllm only)


@pytest.mark.gpu
def test_engine_rollout_and_weight_sync(tmp_path):
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    pytest.importorskip("vllm")
    import time

    from reasoner.config import Config
    from reasoner.models import prepare_tokenizer, set_generation_ids
    from reasoner.models.tiny import TinyRecipe, build_config, build_tokenizer
    from reasoner.sampler.vllm import VLLMSampler
    from transformers import Qwen2ForCausalLM

    tok = build_tokenizer()
    prepare_tokenizer(tok)
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(build_config(TinyRecipe(), tok)).cuda()
    set_generation_ids(model, tok)
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    model = Qwen2ForCausalLM.from_pretrained(tmp_path).cuda()
    cfg = Config()
    cfg.sampling.vllm_gpu_memory_utilization = 0.2
    sampler = VLLMSampler(model, tok, cfg)
    params = SamplingParams(n=8, temperature=1.0, max_new_tokens=32, seed=1)
    sampler.generate(["1+2="] * 2, params)  # warm-up
    t0 = time.perf_counter()
    roll = sampler.generate([f"{a}+{b}=" for a in range(8) for b in range(8)], params)
    tok_s = float(roll.lengths.sum()) / (time.perf_counter() - t0)
    print(f"vLLM tokens/s (64 prompts x 8 samples, 32 tokens, random tiny model): {tok_s:.0f}")
    assert roll.completion_ids.shape[0] == 512 and (roll.logp[roll.completion_mask] <= 0).all()
    # engine log-probs match the trainer's on the sampled tokens (fp32 both sides)
    from reasoner.logprobs import completion_logp

    with torch.no_grad():
        ref, _ = completion_logp(model, roll.prompt_ids.cuda(), roll.prompt_mask.cuda(), roll.completion_ids.cuda(),
                                 roll.completion_mask.cuda())
    gap = (ref.cpu() - roll.logp)[roll.completion_mask].abs().max()
    assert gap < 1e-2, gap
    # after changing the trainer's weights the engine must follow: the probe check passes only after a push
    before = sampler.check_sync()
    with torch.no_grad():
        model.lm_head.weight.mul_(3.0)
    with pytest.raises(RuntimeError, match="does not generate from the trainer"):
        sampler.check_sync()
    sampler.sync_weights(model)
    assert sampler.check_sync() <= sampler.probe_tol and before <= sampler.probe_tol
