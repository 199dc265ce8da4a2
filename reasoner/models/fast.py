"""The lean forward for Llama-family decoders (Llama; Qwen2 without a sliding window).

The sampler and the log-prob pass use it whenever ``supports(backbone)`` (eager/sdpa
attention, no sliding window, no attention dropout, no gradient checkpointing, no module
hooks such as FSDP's); other models keep the transformers forward. Same maths and weights
as the transformers modules (a layer's submodules are called as modules, so peft's LoRA
layers run too), without their per-call machinery (mask factories, output capturing,
cache classes), and with a padding-free log-prob pass (``completion_hidden``): projections,
norms and MLPs see only real tokens, each distinct prompt's once and the completions', in
one packed pass; attention alone lays them out per row. Skipping the padding and the
per-call machinery is what pays on small models, whose passes are bound by per-operation
cost (figures: ``docs/benchmarks.md``, "reasoner/models/fast.py").

Shapes: N rows, q new positions, k = past + q key positions, H hidden, h heads of size d.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

MODEL_TYPES = ("llama", "qwen2")
_HEAD_ATTRS = ("final_logit_softcapping", "logit_scale", "output_multiplier", "lm_head_multiplier", "logits_scaling")


@dataclass
class KVCache:
    """Per-layer keys/values [N, kv_heads, k, d] and the key padding mask [N, k] (bool).

    ``reserve(extra, repeats)`` turns it into static buffers of the final length K written in place
    (decoding, no autograd): attention then reads the whole buffers, the positions not yet written
    masked out (zeros, never seen), so no step copies or reslices them (a slice of a buffer is not a
    standard batch layout, and ``bmm`` copies it: ``docs/benchmarks.md``, "reasoner/models/fast.py");
    ``keys``/``values``/``mask`` stay the views of the first ``length`` positions. Otherwise new
    positions are concatenated (differentiable: the log-prob pass)."""

    keys: list = field(default_factory=list)
    values: list = field(default_factory=list)
    mask: torch.Tensor | None = None  # [N, k] bool: real (not padding) key positions
    length: int = 0
    _kbuf: list | None = None  # reserved: per layer [N, kv_heads, K, d]
    _vbuf: list | None = None
    _mbuf: torch.Tensor | None = None  # reserved: [N, K] bool, real keys written so far

    def reserve(self, extra: int, repeats: int = 1) -> None:
        """Fixed buffers with room for ``extra`` more positions, each row repeated ``repeats`` times."""
        n, kvh, k, d = self.keys[0].shape
        self._kbuf = [x.new_zeros(n * repeats, kvh, k + extra, d) for x in self.keys]  # zeros: finite when masked
        self._vbuf = [x.new_zeros(n * repeats, kvh, k + extra, d) for x in self.values]
        for buf, x in zip(self._kbuf + self._vbuf, self.keys + self.values):
            buf.view(n, repeats, kvh, k + extra, d)[:, :, :, :k] = x[:, None]
        self._mbuf = self.mask.new_zeros(n * repeats, k + extra)
        self._mbuf[:, :k] = self.mask.repeat_interleave(repeats, 0)
        self._views()

    def _views(self) -> None:
        self.keys = [b[:, :, :self.length] for b in self._kbuf]
        self.values = [b[:, :, :self.length] for b in self._vbuf]
        self.mask = self._mbuf[:, :self.length]

    def batch_select_indices(self, index: torch.Tensor) -> None:
        """Keep/repeat rows: row i of the result is row index[i] (a gather, differentiable)."""
        if self._kbuf is not None:
            self._kbuf = [b[index] for b in self._kbuf]
            self._vbuf = [b[index] for b in self._vbuf]
            self._mbuf = self._mbuf[index]
            self._views()
        else:
            self.keys = [x[index] for x in self.keys]
            self.values = [x[index] for x in self.values]
            self.mask = self.mask[index]


class _Take(torch.autograd.Function):
    """x.index_select(0, idx) for indices that never repeat: the backward copies the gradient into place
    (index_copy) instead of index_select's accumulating scatter-add, which is slow in bf16 on the CPU."""

    @staticmethod
    def forward(ctx, x, idx):
        ctx.save_for_backward(idx)
        ctx.shape = x.shape
        return x.index_select(0, idx)

    @staticmethod
    def backward(ctx, grad):
        (idx,) = ctx.saved_tensors
        return grad.new_zeros(ctx.shape).index_copy_(0, idx, grad), None


class ModuleProjections:
    """The layers' own projection modules (any kind: plain Linear, peft's LoRA layers), with autograd."""

    @staticmethod
    def qkv(li: int, attn, h):
        return attn.q_proj(h), attn.k_proj(h), attn.v_proj(h)

    @staticmethod
    def out(li: int, attn, o):
        return attn.o_proj(o)

    @staticmethod
    def mlp(li: int, mlp, h):
        return mlp(h)


def backbone_of(model):
    """The transformer body of an HF causal LM (``model.model`` for Llama/Qwen2), PEFT unwrapped; else None."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # PEFT: layers are patched in place
    body = getattr(base, getattr(base, "base_model_prefix", "model") or "model", None)
    return body if isinstance(body, torch.nn.Module) and body is not base else None


def split_head(model):
    """(backbone, lm_head) of a causal LM whose logits are exactly lm_head(hidden); else None."""
    get_head = getattr(model, "get_output_embeddings", None)
    head = get_head() if get_head else None
    backbone = backbone_of(model)
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    cfg = getattr(base, "config", None)
    if type(model).__name__.startswith("FSDP"):  # FSDP2 hooks live on the root module's forward
        return None
    if not isinstance(head, torch.nn.Linear) or backbone is None or cfg is None:
        return None
    text_cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
    if any(getattr(text_cfg, a, None) not in (None, 1.0) for a in _HEAD_ATTRS):
        return None
    return backbone, head


def lean_parts(model):
    """(backbone, lm_head) when ``model``'s logits are lm_head(backbone) and this module can run the backbone."""
    parts = split_head(model)
    return parts if parts is not None and supports(parts[0]) else None


def supports(backbone) -> bool:
    """True when ``forward_hidden`` computes exactly what ``backbone`` (a Llama/Qwen2 *Model) does."""
    cfg = getattr(backbone, "config", None)
    if getattr(cfg, "model_type", None) not in MODEL_TYPES or not hasattr(backbone, "layers"):
        return False
    if getattr(cfg, "_attn_implementation", None) not in ("sdpa", "eager", None):
        return False
    if getattr(backbone, "has_sliding_layers", False) or getattr(cfg, "use_sliding_window", False):
        return False
    if getattr(cfg, "attention_dropout", 0.0) or getattr(cfg, "pretraining_tp", 1) != 1:
        return False
    if getattr(backbone, "gradient_checkpointing", False):
        return False
    return not any(m._forward_pre_hooks or m._forward_hooks for m in (backbone, *backbone.layers))  # FSDP, hooks


def forward_hidden(backbone, ids: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor,
                   cache: KVCache | None = None, proj=ModuleProjections) -> tuple[torch.Tensor, KVCache]:
    """Final hidden states [N, q, H] of tokens ids [N, q] and the cache extended by them.

    mask [N, q]: real tokens (False: left padding); pos [N, q]: their position ids.
    Each query sees the cache's real keys and the real new keys at or before it."""
    cache = cache if cache is not None else KVCache()
    q_len, past, fresh = ids.shape[1], cache.length, not cache.keys
    key_mask = _key_mask(cache, mask.bool(), past)  # [N, k]
    allowed = key_mask[:, None, None, :]  # [N, 1, 1, k]
    if q_len > 1:  # causal within the new block; a padding query sees itself (finite, unused)
        width = key_mask.shape[1]
        allowed = allowed & _causal(q_len, past, ids.device, width) | _diagonal(q_len, past, ids.device, width)
    allowed = Allowed(allowed)

    length = past + q_len if cache._kbuf is not None else None  # reserved buffers: keys written so far

    def attend(li, q, k, v):  # [N, q, heads, d] each
        k, v = _append(cache, li, k.transpose(1, 2), v.transpose(1, 2), fresh)
        scale = backbone.layers[li].self_attn.scaling
        return _sdpa(q.transpose(1, 2), k, v, allowed, scale, length).transpose(1, 2)

    x = _layers(backbone, backbone.embed_tokens(ids), pos, attend, proj)
    cache.length = past + q_len
    if cache._kbuf is not None:
        cache._views()
    else:
        cache.mask = key_mask
    return rms_norm(backbone.norm, x), cache


def _key_mask(cache: KVCache, mask: torch.Tensor, past: int) -> torch.Tensor:
    """[N, k] bool, the real keys once the new ones (mask [N, q]) are in: with reserved buffers their
    whole width K (the new keys' mask recorded in place), else past + q."""
    if cache._mbuf is not None:
        cache._mbuf[:, past:past + mask.shape[1]] = mask
        return cache._mbuf
    return mask if cache.mask is None else torch.cat([cache.mask, mask], 1)


def completion_hidden(backbone, prompt_ids, prompt_mask, completion_ids, completion_mask) -> torch.Tensor:
    """Hidden states [N, T, H] predicting each completion token (zeros where nothing is predicted).

    One padding-free pass: every projection, norm and MLP sees only real tokens, packed as
    [M, H]: each distinct prompt's tokens once, then the completion tokens that predict a real
    next token. Only attention lays them out per row: the U distinct prompts as [U, P]
    (causal), the completions as [N, T-1] next to their prompt's keys."""
    N, T = completion_ids.shape
    P = prompt_ids.shape[1]
    key = torch.cat([prompt_ids, prompt_mask.long()], 1)
    uniq, inv = torch.unique(key, dim=0, return_inverse=True)  # inv[i]: row i's distinct prompt
    U, u_mask = uniq.shape[0], uniq[:, P:].bool()  # [U, P]
    live = completion_mask[:, 1:].bool()  # [N, T-1]: input token t is needed when token t+1 is real
    p_idx = u_mask.reshape(-1).nonzero().squeeze(1)  # [Mp] flat (prompt, p) of the packed prompt tokens
    c_idx = live.reshape(-1).nonzero().squeeze(1)  # [Mc] flat (row, t) of the packed completion tokens
    Mp, Mc, Tc = p_idx.shape[0], c_idx.shape[0], T - 1
    pos = torch.cat([positions(u_mask)[u_mask],
                     (prompt_mask.long().sum(-1, keepdim=True) + torch.arange(Tc, device=p_idx.device))[live]])
    p_allowed = Allowed((u_mask[:, None, None, :] & _causal(P, 0, p_idx.device)) | _diagonal(P, 0, p_idx.device))
    c_allowed = Allowed(torch.cat([prompt_mask.bool()[:, None, None, :].expand(N, 1, Tc, P),
                                   _causal(Tc, 0, p_idx.device).expand(N, 1, Tc, Tc)], -1))  # [N, 1, T-1, P+T-1]

    def laid_out(x, idx, rows, width):  # packed [m, heads, d] -> [rows, heads, width, d], zeros at padding
        flat = x.new_zeros(rows * width, *x.shape[1:]).index_copy(0, idx, x)
        return flat.view(rows, width, *x.shape[1:]).transpose(1, 2)

    def packed(o, idx):  # [rows, heads, width, d] -> [m, heads, d]
        return _Take.apply(o.transpose(1, 2).reshape(-1, o.shape[1], o.shape[3]), idx)

    def attend(li, q, k, v):  # [Mp + Mc, heads, d] each
        scale = backbone.layers[li].self_attn.scaling
        kp, vp = laid_out(k[:Mp], p_idx, U, P), laid_out(v[:Mp], p_idx, U, P)  # [U, kv_heads, P, d]
        op = _sdpa(laid_out(q[:Mp], p_idx, U, P), kp, vp, p_allowed, scale)
        if not Mc:
            return packed(op, p_idx)
        kc = torch.cat([kp[inv], laid_out(k[Mp:], c_idx, N, Tc)], 2)
        vc = torch.cat([vp[inv], laid_out(v[Mp:], c_idx, N, Tc)], 2)
        oc = _sdpa(laid_out(q[Mp:], c_idx, N, Tc), kc, vc, c_allowed, scale)
        return torch.cat([packed(op, p_idx), packed(oc, c_idx)])

    tokens = torch.cat([uniq[:, :P][u_mask], completion_ids[:, :-1][live]])
    x = _layers(backbone, backbone.embed_tokens(tokens), pos, attend)  # [Mp + Mc, H]
    last = u_mask.reshape(-1).long().cumsum(0)[P - 1::P] - 1  # [U] packed index of each prompt's last token
    h = rms_norm(backbone.norm, torch.cat([x[last], x[Mp:]]))  # only the states that predict a completion token
    out = h.new_zeros(N, T, h.shape[-1])
    out[:, 0] = h[:U][inv]  # left padding: the last prompt position predicts token 0
    if Mc:
        out[:, 1:][live] = h[U:]
    return out


def _layers(backbone, x: torch.Tensor, pos: torch.Tensor, attend, proj=ModuleProjections) -> torch.Tensor:
    """The decoder layers on x [..., H] (tokens at positions pos [...]); attend(layer, q, k, v) mixes tokens;
    proj: ModuleProjections, or decoding's fused prepacked copy (models.packed.PackedProjections)."""
    cos, sin = backbone.rotary_emb(x, pos if pos.dim() > 1 else pos[None])
    cos, sin = cos.view(*x.shape[:-1], 1, -1), sin.view(*x.shape[:-1], 1, -1)  # [..., 1, d]: broadcast over heads
    half = cos.shape[-1] // 2
    sin = torch.cat([-sin[..., :half], sin[..., half:]], -1)  # rotate_half(x) * sin == roll(x, half) * this
    for li, layer in enumerate(backbone.layers):
        attn = layer.self_attn
        q, k, v = proj.qkv(li, attn, rms_norm(layer.input_layernorm, x))
        q, k, v = (t.unflatten(-1, (-1, attn.head_dim)) for t in (q, k, v))
        o = attend(li, _rope(q, cos, sin), _rope(k, cos, sin), v)
        x = x + proj.out(li, attn, o.flatten(-2))
        x = x + proj.mlp(li, layer.mlp, rms_norm(layer.post_attention_layernorm, x))
    return x


def _hf_rms_forwards() -> tuple:
    from transformers.models.llama.modeling_llama import LlamaRMSNorm
    from transformers.models.qwen2.modeling_qwen2 import Qwen2RMSNorm
    return LlamaRMSNorm.forward, Qwen2RMSNorm.forward


_HF_RMS = _hf_rms_forwards()


def rms_norm(norm, x: torch.Tensor) -> torch.Tensor:
    """norm(x) for transformers' Llama/Qwen2 RMSNorm through torch's fused kernel, the same values (the
    normalisation in float32, rounded to x's dtype, then times the weight); any other norm module is called.
    Four to five times faster on a training pass's rows (``docs/benchmarks.md``, "reasoner/models/fast.py")."""
    if type(norm).forward not in _HF_RMS or norm._forward_hooks or norm._forward_pre_hooks:
        return norm(x)
    return norm.weight * F.rms_norm(x.float(), norm.weight.shape, eps=norm.variance_epsilon).to(x.dtype)


class Allowed:
    """Which keys each query sees, ``mask`` [N, 1, q, k] bool (broadcastable), made once per pass and
    shared by every layer; ``bias(...)`` is the same as an additive 0 / -inf mask laid out for ``_sdpa``'s
    grouped matmuls, built once per dtype and head layout."""

    def __init__(self, mask: torch.Tensor):
        self.mask, self._bias = mask, {}

    def bias(self, dtype: torch.dtype, kv_heads: int, group: int) -> torch.Tensor:
        """[N * kv_heads, group * q, k] in ``dtype``: 0 where allowed, -inf elsewhere."""
        key = (dtype, kv_heads, group)
        if key not in self._bias:
            N, _, q, k = self.mask.shape
            b = torch.zeros(self.mask.shape, dtype=dtype, device=self.mask.device).masked_fill_(~self.mask, float("-inf"))
            self._bias[key] = b[:, :, None].expand(N, kv_heads, group, q, k).reshape(N * kv_heads, group * q, k)
        return self._bias[key]


def _sdpa(q, k, v, allowed: Allowed, scale, length: int | None = None):
    """Attention of q [N, h, q, d] over k, v [N, kv_heads, k, d] (grouped-query: query head i reads kv head
    i // (h / kv_heads), as transformers' repeat_kv).

    float32: torch's fused kernel. Lower precision on the CPU: one baddbmm (scale and mask folded in),
    softmax, bmm per layer, the query heads of a kv head stacked as rows. torch's CPU flash kernel in
    bf16 is slow for these small shapes, worst in decoding (one query per row) and in the backward.
    length: only the first ``length`` keys are written (static decode buffers, the rest masked). The
    fused kernel then reads a view of them; the bf16 matmuls read the whole buffers (a view's batch
    layout makes ``bmm`` copy it) and the softmax alone runs over the first ``length`` scores, its
    output zero-padded: the same values as attention over ``length`` keys (the softmax's vectorised
    sum depends on the row's length; a zero probability adds nothing to the ``bmm``)."""
    if q.dtype == torch.float32 or q.device.type != "cpu":
        mask = allowed.mask
        if length is not None:
            k, v, mask = k[:, :, :length], v[:, :, :length], mask[..., :length]
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale, enable_gqa=q.shape[1] != k.shape[1])
    N, h, n_q, d = q.shape
    kvh, width = k.shape[1], k.shape[2]
    g = h // kvh
    scores = torch.baddbmm(allowed.bias(q.dtype, kvh, g), q.reshape(N * kvh, g * n_q, d),
                           k.reshape(N * kvh, -1, d).transpose(1, 2), alpha=scale)
    if length is None or length == width:
        probs = scores.softmax(-1)
    else:
        probs = F.pad(scores[..., :length].softmax(-1), (0, width - length))
    return torch.bmm(probs, v.reshape(N * kvh, -1, d)).view(N, h, n_q, d)


def _causal(q_len: int, past: int, device, width: int | None = None) -> torch.Tensor:
    """[q, width] bool (width: past+q by default): query i (at position past+i) sees keys 0..past+i."""
    keys = torch.arange(width or past + q_len, device=device)
    return keys[None] <= torch.arange(past, past + q_len, device=device)[:, None]


def _diagonal(q_len: int, past: int, device, width: int | None = None) -> torch.Tensor:
    eye = torch.zeros(q_len, width or past + q_len, dtype=torch.bool, device=device)
    eye[:, past:past + q_len] = torch.eye(q_len, dtype=torch.bool, device=device)
    return eye


def positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids for a left-padded batch: 0 at each row's first real token."""
    return (mask.long().cumsum(-1) - 1).clamp_min(0)


def _rope(x, cos, sin_signed):
    """x * cos + rotate_half(x) * sin, transformers' rotary embedding; rotate_half(x) = [-x2, x1]."""
    return x * cos + x.roll(x.shape[-1] // 2, -1) * sin_signed


def _append(cache: KVCache, li: int, k, v, fresh: bool):
    if fresh:
        cache.keys.append(k)
        cache.values.append(v)
        return k, v
    if cache._kbuf is not None:  # in place into the reserved buffers, read whole (the mask hides the rest)
        end = cache.length + k.shape[2]
        cache._kbuf[li][:, :, cache.length:end] = k
        cache._vbuf[li][:, :, cache.length:end] = v
        return cache._kbuf[li], cache._vbuf[li]
    cache.keys[li] = torch.cat([cache.keys[li], k], 2)
    cache.values[li] = torch.cat([cache.values[li], v], 2)
    return cache.keys[li], cache.values[li]
