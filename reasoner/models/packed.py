"""Decoding's copy of a Llama-family backbone's projections: q/k/v and gate/up fused into one matmul
each, every weight prepacked for oneDNN's bf16 CPU matmul (``torch.ops.mkldnn``).

A decode step multiplies a few dozen rows by every weight, so the fixed cost of each matmul call
and the weight layout matter as much as the arithmetic: fusing cuts the number of calls a step,
and prepacking stores each weight once in the layout oneDNN computes with
(``scripts/bench_generate.py`` measures the whole decode; the figures are in
``docs/benchmarks.md``, "reasoner/models/packed.py"). The copy costs the weights' size in memory
and a repack whenever they change (once per training step); ``for_model`` keeps it while the
parameters' version counters stay the same. No autograd: decoding only. Used where
``supported``: bf16 weights on the CPU, plain ``nn.Linear`` projections (not peft's LoRA layers)
and a plain MLP (gate, up, down, act_fn).
"""
from __future__ import annotations

import weakref

import torch

_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # backbone: (versions, PackedProjections)


def _mkldnn_ok() -> bool:
    return hasattr(torch.ops.mkldnn, "_linear_pointwise") and torch.backends.mkldnn.is_available()


def supported(backbone, head) -> bool:
    """bf16 CPU weights and plain Linear projections and MLPs throughout."""
    lin = torch.nn.Linear
    if not isinstance(head, lin) or head.weight.dtype != torch.bfloat16 or head.weight.device.type != "cpu":
        return False
    for layer in backbone.layers:
        a, m = layer.self_attn, layer.mlp
        mods = (a.q_proj, a.k_proj, a.v_proj, a.o_proj, getattr(m, "gate_proj", None), getattr(m, "up_proj", None),
                getattr(m, "down_proj", None))
        if any(type(x) is not lin for x in mods) or not hasattr(m, "act_fn"):
            return False
    return _mkldnn_ok()


class _Linear:
    """One prepacked weight [out, in] (several modules' weights stacked) and its bias."""

    def __init__(self, mods, rows_hint: int):
        w = torch.cat([m.weight.detach() for m in mods]) if len(mods) > 1 else mods[0].weight.detach()
        self.bias = None
        if any(m.bias is not None for m in mods):
            self.bias = torch.cat([m.bias.detach() if m.bias is not None else w.new_zeros(m.out_features)
                                   for m in mods])
        self.packed = torch.ops.mkldnn._reorder_linear_weight(w.contiguous(), rows_hint)
        self.splits = [m.out_features for m in mods]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1])
        y = torch.ops.mkldnn._linear_pointwise(flat, self.packed, self.bias, "none", [], "")
        return y.view(*x.shape[:-1], y.shape[-1])


class PackedProjections:
    """The ``fast.ModuleProjections`` interface over fused, prepacked weights, plus the LM head."""

    def __init__(self, backbone, head, rows_hint: int = 32):
        self.qkv_w, self.o_w, self.gu_w, self.down_w = [], [], [], []
        for layer in backbone.layers:
            a, m = layer.self_attn, layer.mlp
            self.qkv_w.append(_Linear([a.q_proj, a.k_proj, a.v_proj], rows_hint))
            self.o_w.append(_Linear([a.o_proj], rows_hint))
            self.gu_w.append(_Linear([m.gate_proj, m.up_proj], rows_hint))
            self.down_w.append(_Linear([m.down_proj], rows_hint))
        self.head = _Linear([head], rows_hint)

    def qkv(self, li: int, attn, h):
        return self.qkv_w[li](h).split(self.qkv_w[li].splits, -1)

    def out(self, li: int, attn, o):
        return self.o_w[li](o)

    def mlp(self, li: int, mlp, h):
        gate, up = self.gu_w[li](h).split(self.gu_w[li].splits, -1)
        return self.down_w[li](mlp.act_fn(gate) * up)


def for_model(backbone, head, rows_hint: int = 32) -> PackedProjections | None:
    """The packed copy of ``backbone`` + ``head`` (rebuilt when a weight changed), or None where unsupported."""
    if not supported(backbone, head):
        return None
    params = list(backbone.parameters()) + [head.weight]
    versions = tuple(p._version for p in params), tuple(p.data_ptr() for p in params)
    hit = _CACHE.get(backbone)
    if hit is None or hit[0] != versions:
        _CACHE[backbone] = None  # free the old copy before building the new one
        with torch.no_grad():
            _CACHE[backbone] = (versions, PackedProjections(backbone, head, rows_hint))
    return _CACHE[backbone][1]
