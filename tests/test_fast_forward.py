"""models.fast: the lean Llama/Qwen2 forward equals the transformers one (values and gradients)."""
from __future__ import annotations

import pytest
import torch

from reasoner import threads
from reasoner.logprobs import shared_prefix_hidden
from reasoner.models import fast
from reasoner.sampler import SamplingParams
from reasoner.sampler.transformers import TransformersSampler


def _model(kind: str):
    """A random 2-layer model with grouped-query attention (4 heads, 2 kv heads), fp32."""
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    cls, cfg = {"qwen2": (Qwen2ForCausalLM, Qwen2Config), "llama": (LlamaForCausalLM, LlamaConfig)}[kind]
    torch.manual_seed(0)
    config = cfg(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, max_position_embeddings=64, rope_theta=10000.0)
    return cls(config).float()


def _batch(N=12, G=3, P=5, T=7, seed=1):
    """N rows (N/G distinct left-padded prompts, G rows each) and ragged completions (prefix masks)."""
    g = torch.Generator().manual_seed(seed)
    pids = torch.randint(3, 50, (N // G, P), generator=g).repeat_interleave(G, 0)
    pmask = torch.ones(N, P, dtype=torch.bool)
    pmask[:G, :2] = False  # the first prompt is 2 tokens shorter
    cids = torch.randint(3, 50, (N, T), generator=g)
    lengths = torch.randint(1, T + 1, (N,), generator=g)
    lengths[0] = T
    cmask = torch.arange(T)[None] < lengths[:, None]
    return pids, pmask, cids, cmask


@pytest.mark.parametrize("kind", ["qwen2", "llama"])
def test_supported_models(kind):
    model = _model(kind)
    assert fast.supports(model.model)
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    assert not fast.supports(model.model)  # checkpointing lives in transformers' layer calls


def test_unsupported_configurations_keep_the_transformers_forward():
    from transformers import GPT2Config, GPT2LMHeadModel, Qwen2Config, Qwen2Model

    assert not fast.supports(GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=50)).transformer)
    sliding = Qwen2Model(Qwen2Config(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                     num_attention_heads=4, num_key_value_heads=2, use_sliding_window=True,
                                     sliding_window=4, max_window_layers=0))
    assert not fast.supports(sliding)
    hooked = _model("qwen2").model
    hooked.layers[0].register_forward_pre_hook(lambda m, a: None)  # e.g. FSDP's all-gather hooks
    assert not fast.supports(hooked)


@pytest.mark.parametrize("kind", ["qwen2", "llama"])
def test_prompt_pass_and_cached_steps_equal_one_transformers_forward(kind):
    """Prompt pass, then two single-token steps through the cache == one full forward at real positions."""
    backbone = _model(kind).model.eval()
    pids, pmask, cids, _ = _batch()
    ids, mask = torch.cat([pids, cids[:, :2]], 1), torch.cat([pmask, torch.ones(len(pids), 2, dtype=torch.bool)], 1)
    with torch.no_grad():
        want = backbone(input_ids=ids, attention_mask=mask.long(), position_ids=fast.positions(mask)).last_hidden_state
        h, cache = fast.forward_hidden(backbone, pids, pmask, fast.positions(pmask))
        cache.reserve(2)  # the decode loop's in-place buffers
        steps = [h]
        for t in range(2):
            pos = pmask.sum(-1, keepdim=True) + t
            h, cache = fast.forward_hidden(backbone, cids[:, t:t + 1], torch.ones(len(pids), 1, dtype=torch.bool),
                                           pos, cache)
            steps.append(h)
    got = torch.cat(steps, 1)
    torch.testing.assert_close(got[mask], want[mask], atol=1e-5, rtol=1e-5)
    assert cache.length == ids.shape[1] and cache.keys[0].shape[2] == ids.shape[1]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_reserved_buffers_read_whole_equal_the_transformers_forward_after_a_block_and_a_row_gather(dtype):
    """Static decode buffers (attention reads all K positions, the unwritten ones masked): a 2-token
    block step, then a row gather (compaction, rows repeated), then a 1-token step == one full forward."""
    backbone = _model("llama").model.eval().to(dtype)
    pids, pmask, cids, _ = _batch()
    ones = torch.ones(len(pids), 3, dtype=torch.bool)
    ids, mask = torch.cat([pids, cids[:, :3]], 1), torch.cat([pmask, ones], 1)
    keep = torch.tensor([0, 0, 5, 11])  # row 0 twice (a repeat), rows of other prompts
    with torch.no_grad():
        want = backbone(input_ids=ids, attention_mask=mask.long(), position_ids=fast.positions(mask)).last_hidden_state
        h0, cache = fast.forward_hidden(backbone, pids, pmask, fast.positions(pmask))
        cache.reserve(5)  # room for 2 more positions than used: they stay masked
        block = fast.positions(mask)[:, pids.shape[1]:pids.shape[1] + 2]
        h1, cache = fast.forward_hidden(backbone, cids[:, :2], ones[:, :2], block, cache)
        cache.batch_select_indices(keep)
        h2, cache = fast.forward_hidden(backbone, cids[keep, 2:3], ones[keep, :1], block[keep, 1:] + 1, cache)
    got = torch.cat([h0[keep], h1[keep], h2], 1)
    tol = dict(atol=1e-5, rtol=1e-5) if dtype == torch.float32 else dict(atol=0.05, rtol=0.02)
    torch.testing.assert_close(got[mask[keep]].float(), want[keep][mask[keep]].float(), **tol)
    assert cache.length == ids.shape[1] and cache.mask.shape == (4, ids.shape[1]) and cache.mask[:, -3:].all()
    assert cache._kbuf[0].shape[2] == pids.shape[1] + 5


@pytest.mark.parametrize("kind", ["qwen2", "llama"])
def test_packed_completions_equal_the_padded_transformers_pass_with_gradients(kind):
    model = _model(kind)
    backbone = model.model
    pids, pmask, cids, cmask = _batch()

    def run(fn):
        h = fn(backbone, pids, pmask, cids, cmask)[cmask]  # [M, H]: the states that predict real tokens
        (h * torch.linspace(-1, 1, h.shape[-1])).sum().backward()
        grads = [p.grad.clone() for p in backbone.parameters()]
        model.zero_grad(set_to_none=True)
        return h.detach(), grads

    (a, ga), (b, gb) = run(fast.completion_hidden), run(shared_prefix_hidden)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    for x, y in zip(ga, gb):
        torch.testing.assert_close(x, y, atol=1e-5, rtol=1e-4)
    # one-token completions: only the prompt pass runs (nothing to pack)
    with torch.no_grad():
        one = fast.completion_hidden(backbone, pids, pmask, cids[:, :1], cmask[:, :1])
        torch.testing.assert_close(one, shared_prefix_hidden(backbone, pids, pmask, cids[:, :1], cmask[:, :1]),
                                   atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_sampler_draws_the_same_tokens_with_either_forward(monkeypatch, temperature):
    from reasoner.models import prepare_tokenizer, set_generation_ids
    from reasoner.models.tiny import build_tokenizer

    tok = build_tokenizer()
    prepare_tokenizer(tok)
    model = _model("qwen2")
    model.resize_token_embeddings(len(tok))
    set_generation_ids(model, tok)
    prompts, params = ["12+7=", "3-1=", "45+45="], SamplingParams(n=3, temperature=temperature, max_new_tokens=6,
                                                                  seed=4)
    lean = TransformersSampler(model.eval(), tok).generate(prompts, params)
    monkeypatch.setattr(fast, "supports", lambda backbone: False)
    plain = TransformersSampler(model, tok).generate(prompts, params)
    assert torch.equal(lean.completion_ids, plain.completion_ids) and lean.texts == plain.texts
    torch.testing.assert_close(lean.logp, plain.logp, atol=1e-5, rtol=0)


def test_threads_drop_to_one_for_small_calls_only():
    small = torch.nn.Linear(128, 384)  # 49,152 multiply-adds per row
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        rows_at_limit = -(-threads.MIN_MACS // (128 * 384))  # the first row count at or over MIN_MACS
        with threads.for_rows(small, rows_at_limit - 1):
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2  # restored
        with threads.for_rows(small, rows_at_limit):
            assert torch.get_num_threads() == 2
        with threads.for_rows(object(), 1):  # not a module (e.g. an engine): left alone
            assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def _logp_and_grads(model, batch, lean: bool, monkeypatch):
    from reasoner.logprobs import completion_logp

    with monkeypatch.context() as m:
        if not lean:
            m.setattr(fast, "supports", lambda backbone: False)
        logp, _ = completion_logp(model, *batch)
        if logp.requires_grad:  # not when every trainable parameter is switched off (adapters disabled)
            (logp * torch.linspace(-1, 1, logp.shape[-1])).sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return logp.detach(), grads


def test_lora_layers_run_inside_the_lean_forward(monkeypatch):
    pytest.importorskip("peft")
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(_model("llama"), LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                       init_lora_weights=False))  # random A and B: not a no-op
    batch = _batch()
    (a, ga), (b, gb) = (_logp_and_grads(model, batch, lean, monkeypatch) for lean in (True, False))
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    assert ga.keys() == gb.keys() and all("lora_" in n for n in ga) and len(ga) == 8  # 2 layers x 2 targets x A, B
    for n in ga:
        torch.testing.assert_close(ga[n], gb[n], atol=1e-5, rtol=1e-4)
    with model.disable_adapter():  # the reference of a LoRA run: adapters off, same path
        off, _ = _logp_and_grads(model, batch, True, monkeypatch)
    base, _ = _logp_and_grads(_model("llama"), batch, False, monkeypatch)  # the same seed: the same base weights
    assert not torch.allclose(off, a)
    torch.testing.assert_close(off, base, atol=1e-5, rtol=1e-5)


def test_bf16_autocast_gives_the_transformers_values_to_bf16_precision(monkeypatch):
    model = _model("qwen2")
    batch = _batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        (a, _), (b, _) = (_logp_and_grads(model, batch, lean, monkeypatch) for lean in (True, False))
    mask = batch[3]
    assert a.dtype == b.dtype and torch.isfinite(a).all()
    torch.testing.assert_close(a[mask], b[mask], atol=0.05, rtol=0)  # bf16 keeps 8 bits of mantissa


def test_bf16_grouped_attention_equals_torch_sdpa_to_bf16_precision():
    # _sdpa's bf16 CPU path (baddbmm + softmax + bmm over grouped heads) against torch's kernel in float32
    # on the same bf16 inputs: 6 query heads over 2 kv heads (head i reads kv head i // 3), a causal
    # block with left padding. bf16 keeps 8 significant bits: |error| stays under ~2^-7 of values of size ~1.
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(3, h, 5, 8, generator=g).bfloat16() for h in (6, 2, 2))
    allowed = torch.ones(3, 1, 5, 5, dtype=torch.bool).tril()
    allowed[0, :, :, :2] = False
    allowed |= torch.eye(5, dtype=torch.bool)  # a padding query sees itself
    want = torch.nn.functional.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=allowed,
                                                            scale=0.3, enable_gqa=True)
    got = fast._sdpa(q, k, v, fast.Allowed(allowed), 0.3)
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), want, atol=0.02, rtol=0)


@pytest.mark.parametrize("kind", ["qwen2", "llama"])
def test_bf16_lean_forward_and_decoding_follow_the_transformers_model(kind, monkeypatch):
    """The whole bf16 path (grouped attention, prepacked fused projections in decoding) against the
    transformers model in bf16: log-probs to bf16 precision, greedy tokens identical."""
    from reasoner.models import packed, prepare_tokenizer, set_generation_ids
    from reasoner.models.tiny import build_tokenizer

    model = _model(kind).bfloat16()
    batch = _batch()
    (a, _), (b, _) = (_logp_and_grads(model, batch, lean, monkeypatch) for lean in (True, False))
    torch.testing.assert_close(a[batch[3]].float(), b[batch[3]].float(), atol=0.05, rtol=0)
    monkeypatch.undo()
    tok = build_tokenizer()
    prepare_tokenizer(tok)
    model.resize_token_embeddings(len(tok))
    set_generation_ids(model, tok)
    prompts, params = ["12+7=", "3-1=", "45+45="], SamplingParams(n=2, temperature=0.0, max_new_tokens=6)
    assert packed.for_model(*fast.lean_parts(model)) is not None  # bf16 on the CPU: the packed path runs
    fast_roll = TransformersSampler(model.eval(), tok).generate(prompts, params)
    monkeypatch.setattr(fast, "supports", lambda backbone: False)
    plain = TransformersSampler(model, tok).generate(prompts, params)
    assert torch.equal(fast_roll.completion_ids, plain.completion_ids)


def test_packed_copy_follows_weight_changes_and_skips_lora_and_fp32():
    from reasoner.models import packed

    model = _model("qwen2")
    assert packed.for_model(*fast.lean_parts(model)) is None  # fp32: the module path
    model = model.bfloat16()
    parts = fast.lean_parts(model)
    first = packed.for_model(*parts)
    assert packed.for_model(*parts) is first  # unchanged weights: the same copy
    with torch.no_grad():
        model.model.layers[0].self_attn.q_proj.weight.mul_(2)  # an optimizer step bumps the version
    assert packed.for_model(*parts) is not first
    model.model.layers[0].mlp.up_proj = torch.nn.Identity()  # not a plain Linear (e.g. a peft layer)
    assert packed.for_model(*parts) is None


@pytest.mark.parametrize("kind", ["llama", "qwen2"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("width", [32, 576, 1000])
def test_fused_rms_norm_equals_the_module_exactly(kind, dtype, width):
    """fast.rms_norm (torch's fused kernel) gives the transformers module's values bit for bit, and the
    same gradients; a norm with a hook is called as a module."""
    from transformers.models.llama.modeling_llama import LlamaRMSNorm
    from transformers.models.qwen2.modeling_qwen2 import Qwen2RMSNorm

    g = torch.Generator().manual_seed(width)
    norm = (LlamaRMSNorm if kind == "llama" else Qwen2RMSNorm)(width, eps=1e-5).to(dtype)
    with torch.no_grad():
        norm.weight.copy_(1 + 0.3 * torch.randn(width, generator=g))
    x0 = (3 * torch.randn(7, 5, width, generator=g)).to(dtype)
    outs = []
    for fn in (norm, lambda x: fast.rms_norm(norm, x)):
        x = x0.clone().requires_grad_()
        norm.zero_grad(set_to_none=True)
        y = fn(x)
        (y.float() * torch.linspace(-1, 1, width)).sum().backward()
        outs.append((y.detach(), x.grad, norm.weight.grad))
    torch.testing.assert_close(outs[1][0], outs[0][0], rtol=0, atol=0)
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=0.02, atol=0.02)  # bf16: 8 bits
    for a, b in zip(outs[1][1:], outs[0][1:]):
        torch.testing.assert_close(a.float(), b.float(), **tol)
    calls = []
    norm.register_forward_hook(lambda *a: calls.append(1))
    fast.rms_norm(norm, x0)
    assert calls == [1]
