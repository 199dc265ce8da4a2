"""Per-token log-probs (and entropy) of sampled completions under a model.

Rows that share a prompt (the G samples of a group) share its forward pass: the backbone
encodes each distinct prompt once, its KV cache is gathered to the rows (differentiably, so
gradients flow back through it), and the completions run on top: padding-free through
``models.fast`` for Llama-family models, else through the transformers backbone (then rows
of similar length may be bucketed to trim padding). The LM head then runs only on the positions
that predict a real completion token (no prompt, no padding), in row chunks of at most
``HEAD_CHUNK`` logits each, through one autograd node (``_HeadLogp``) whose backward forms
d logp / d logits = onehot - softmax directly from the forward's softmax (kept up to
``HEAD_KEEP`` logits in all, in a buffer reused from step to step, else recomputed chunk by chunk): the ``[N, T, vocab]`` logits
of a large vocabulary are never materialised beyond that budget, and no generic
log-softmax/gather backward runs. Models whose head is not a plain projection (logit
soft-capping or scaling) take the full forward instead; autocast takes plain autograd.
"""
from __future__ import annotations

import weakref

import torch
from torch.utils.checkpoint import checkpoint

from reasoner import threads
from reasoner.models import fast
from reasoner.models.fast import positions, split_head

HEAD_CHUNK = 1 << 22  # logits per LM-head chunk (16 MiB in fp32)
HEAD_KEEP = 1 << 27  # softmax kept for the backward up to this many logits (512 MiB in fp32)
# Fixed cost of one more forward(+backward) call, per decoder layer, in (parameter x token) units:
# an extra length bucket's call overhead is worth about this much arithmetic (measured on the tiny
# model: docs/benchmarks.md, "reasoner/logprobs.py"), so bucketing pays only when it cuts more than that.
CALL_WORK_PER_LAYER = 1 << 26


def completion_logp(model, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, completion_ids: torch.Tensor,
                    completion_mask: torch.Tensor, temperature: float = 1.0, with_entropy: bool = False,
                    entropy_grad: bool = False):
    """Return (logp [N, T], entropy [N, T] or None) of completion tokens given their prompts.

    The entropy carries no gradient unless ``entropy_grad`` (an entropy bonus in the loss).

    prompt_ids/prompt_mask: [N, P] left padded; completion_ids/completion_mask: [N, T].
    Logits are divided by the sampling temperature, matching the sampler's log-probs when sampling
    truncates nothing (sampling.top_k, min_p, top_p off; else the sampler's are renormalised over the kept tokens).
    Positions outside completion_mask get log-prob 0 and entropy 0.
    """
    parts = split_head(model)  # (backbone, head), or None: the model's own logits
    lean = parts is not None and fast.supports(parts[0])  # padding-free: nothing for buckets to trim
    order = [] if lean else length_buckets(completion_mask, call_tokens=_call_tokens(model))
    if len(order) > 1:  # rows of similar length together, each bucket trimmed to its longest row
        T = completion_ids.shape[1]
        outs = [_bucket(model, parts, prompt_ids[i], prompt_mask[i], completion_ids[i], completion_mask[i],
                        temperature, with_entropy, T, entropy_grad) for i in order]
        back = torch.cat(order).argsort()  # bucket-major rows -> original rows
        logp = torch.cat([o[0] for o in outs])[back]
        return logp, (torch.cat([o[1] for o in outs])[back] if with_entropy else None)
    return _logp_rows(model, parts, lean, prompt_ids, prompt_mask, completion_ids, completion_mask, temperature,
                      with_entropy, entropy_grad)


def length_buckets(completion_mask: torch.Tensor, max_buckets: int = 4, min_saving: float = 0.15,
                   min_rows: int = 8, min_tokens: int = 256, call_tokens: int = 0) -> list[torch.Tensor]:
    """Row indices in up to max_buckets groups of similar completion length, or one group when
    bucketing would cut the padded completion positions by less than min_saving of them, by
    fewer than min_tokens, or by fewer than call_tokens per extra bucket (each bucket costs one
    more forward call, worth call_tokens positions of arithmetic: small cuts do not pay). Never
    under torch.distributed: FSDP needs every rank to make the same forward calls."""
    N, T = completion_mask.shape
    everyone = [torch.arange(N, device=completion_mask.device)]
    if N < 2 * min_rows or T == 0 or torch.distributed.is_initialized():  # ranks must make the same calls
        return everyone
    lengths = completion_mask.sum(-1)
    order = lengths.argsort()
    k = min(max_buckets, N // min_rows)
    groups = list(order.tensor_split(k))
    padded = sum(len(g) * int(lengths[g].max()) for g in groups)
    saved = N * T - padded
    pays = saved >= min_saving * N * T and saved >= max(min_tokens, call_tokens * (k - 1))
    return groups if pays else everyone


def _call_tokens(model) -> int:
    """Padded positions whose arithmetic costs as much as one more forward call of ``model``."""
    if not hasattr(model, "parameters"):  # a wrapper such as lora.AdapterOffReference: no size to go by
        return 0
    if model not in _CALL_TOKENS:  # a model's size and depth do not change over a run
        params = threads.n_params(model) or 1
        layers = getattr(getattr(model, "config", None), "num_hidden_layers", None) or 1
        _CALL_TOKENS[model] = CALL_WORK_PER_LAYER * layers // params
    return _CALL_TOKENS[model]


_CALL_TOKENS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _bucket(model, parts, pids, pmask, cids, cmask, temperature, with_entropy, width, entropy_grad=False):
    t = max(int(cmask.sum(-1).max()), 1)
    logp, ent = _logp_rows(model, parts, False, pids, pmask, cids[:, :t], cmask[:, :t], temperature, with_entropy,
                           entropy_grad)
    pad = lambda x: torch.nn.functional.pad(x, (0, width - t))  # noqa: E731
    return pad(logp), (pad(ent) if with_entropy else None)


def _logp_rows(model, parts, lean: bool, prompt_ids, prompt_mask, completion_ids, completion_mask, temperature,
               with_entropy, entropy_grad=False):
    """completion_logp on one batch of rows; parts = split_head(model), lean = models.fast runs the backbone."""
    if parts is None:
        return full_forward_logp(model, torch.cat([prompt_ids, completion_ids], 1),
                             torch.cat([prompt_mask, completion_mask], 1), completion_ids, completion_mask, temperature,
                             with_entropy, entropy_grad)
    backbone, head = parts
    hidden = hidden_states(backbone, lean, prompt_ids, prompt_mask, completion_ids, completion_mask)
    sel = completion_mask.bool()
    logp_flat, ent_flat = head_logp(head, hidden[sel], completion_ids[sel], temperature, with_entropy, entropy_grad)
    logp = _scatter(logp_flat, sel)
    return logp, (_scatter(ent_flat, sel) if with_entropy else None)


def hidden_states(backbone, lean: bool, prompt_ids, prompt_mask, completion_ids, completion_mask) -> torch.Tensor:
    """Hidden states [N, T, H]: position t is the state that predicts completion token t.

    lean (``fast.supports(backbone)``): models.fast, padding-free; else the transformers
    backbone, each distinct prompt once when some repeat."""
    if lean:
        return fast.completion_hidden(backbone, prompt_ids, prompt_mask, completion_ids, completion_mask)
    if _can_share(backbone, prompt_ids, prompt_mask):
        return shared_prefix_hidden(backbone, prompt_ids, prompt_mask, completion_ids, completion_mask)
    mask = torch.cat([prompt_mask, completion_mask], 1)  # [N, P+T]
    return backbone(input_ids=torch.cat([prompt_ids, completion_ids], 1), attention_mask=mask.long(),
                    position_ids=positions(mask), use_cache=False).last_hidden_state[:, -completion_ids.shape[1] - 1:-1]


def shared_prefix_hidden(backbone, prompt_ids, prompt_mask, completion_ids, completion_mask) -> torch.Tensor:
    """Hidden states [N, T, H] predicting each completion token, each distinct prompt encoded once."""
    key = torch.cat([prompt_ids, prompt_mask.long()], 1)
    uniq, inv = torch.unique(key, dim=0, return_inverse=True)  # inv[i]: row i's distinct prompt
    P = prompt_ids.shape[1]
    u_ids, u_mask = uniq[:, :P], uniq[:, P:]
    out = backbone(input_ids=u_ids, attention_mask=u_mask, position_ids=positions(u_mask), use_cache=True)
    first = out.last_hidden_state[:, -1][inv]  # left padding: the last prompt position predicts token 0
    T = completion_ids.shape[1]
    if T == 1:
        return first[:, None]
    cache = out.past_key_values
    cache.batch_select_indices(inv)  # [U, ...] -> [N, ...], a gather: gradients reach the prompt pass
    mask = torch.cat([prompt_mask, completion_mask[:, :-1]], 1).long()
    pos = prompt_mask.long().sum(-1, keepdim=True) + torch.arange(T - 1, device=prompt_ids.device)
    rest = backbone(input_ids=completion_ids[:, :-1], attention_mask=mask, position_ids=pos, past_key_values=cache,
                    use_cache=True).last_hidden_state  # [N, T-1, H]: token t predicts token t+1
    return torch.cat([first[:, None], rest], 1)


def _can_share(backbone, prompt_ids, prompt_mask) -> bool:
    """Worth it (some prompt repeats) and possible (no gradient checkpointing, which drops the cache)."""
    if getattr(backbone, "gradient_checkpointing", False) and backbone.training:
        return False
    if prompt_ids.shape[0] < 2 or not prompt_mask.any(-1).all():
        return False
    return torch.unique(prompt_ids, dim=0).shape[0] < prompt_ids.shape[0]


def head_logp(head: torch.nn.Linear, hidden: torch.Tensor, targets: torch.Tensor, temperature: float,
              with_entropy: bool, entropy_grad: bool = False):
    """log p(target) (and entropy, no gradient) of rows hidden [M, H] under softmax(head(hidden) / temperature).

    The head runs in row chunks of at most HEAD_CHUNK logits. With gradients on, one autograd
    node computes d logp / d logits = onehot - softmax itself from the forward's softmax (kept
    while all chunks hold at most HEAD_KEEP logits, else recomputed chunk by chunk).
    """
    if not hidden.requires_grad and not head.weight.requires_grad or not torch.is_grad_enabled():
        with torch.no_grad():
            return _head_forward(head.weight, head.bias, hidden, targets, temperature, with_entropy)[:2]
    if entropy_grad or torch.is_autocast_enabled(hidden.device.type):  # autocast: let it pick the matmul dtype
        return _autograd_head(head, hidden, targets, temperature, with_entropy, entropy_grad)
    logp, ent = _HeadLogp.apply(hidden, head.weight, head.bias, targets, temperature, with_entropy)
    return logp, (ent if with_entropy else None)


def _chunk_rows(vocab: int) -> int:
    return max(1, HEAD_CHUNK // vocab)


def _head_forward(weight, bias, hidden, targets, temperature: float, with_entropy: bool,
                  keep: torch.Tensor | None = None):
    """(logp [M], entropy [M] or empty, list of per-chunk softmax [m, V] (views of keep [M, V]) when keep).

    One logits buffer serves every chunk and the softmax is formed in place: fresh large
    tensors cost page faults that can exceed the arithmetic on a CPU.
    """
    rows, V = _chunk_rows(weight.shape[0]), weight.shape[0]
    buf = None if weight.dtype != torch.float32 else hidden.new_empty(min(rows, hidden.shape[0]), V, dtype=torch.float32)
    logps, ents, probs = [], [], []
    for i, (h, y) in enumerate(zip(hidden.split(rows), targets.split(rows))):
        x = _logits(weight, bias, h, temperature, None if buf is None else buf[:len(h)])
        m = x.amax(-1, keepdim=True)
        x.sub_(m)  # x = logits - max
        picked = x.gather(-1, y[:, None]).squeeze(-1)
        if keep is not None:
            e = torch.exp(x, out=keep[i * rows:i * rows + len(h)])
        else:
            e = x.exp() if with_entropy else x.exp_()
        z = e.sum(-1)
        logps.append(picked - z.log())
        if with_entropy:  # H = log z - sum(e * x) / z (vecdot: no [m, V] temporary, and faster than bmm)
            ents.append(z.log() - torch.linalg.vecdot(e, x) / z)
        if keep is not None:
            probs.append(e.div_(z[:, None]))
    cat = lambda xs: torch.cat(xs) if xs else hidden.new_zeros(0, dtype=torch.float32)  # noqa: E731
    return cat(logps), cat(ents), probs


def _logits(weight, bias, h, temperature: float, out: torch.Tensor | None = None) -> torch.Tensor:
    if out is None:
        logits = torch.nn.functional.linear(h, weight, bias).float()
    elif bias is None:
        logits = torch.mm(h, weight.t(), out=out)
    else:
        logits = torch.addmm(bias, h, weight.t(), out=out)
    return logits.div_(temperature) if temperature > 0 and temperature != 1.0 else logits


class _Workspace:
    """One buffer reused from step to step: the softmax a forward keeps for its backward (float32), or
    the backward's low-precision copy of d logits.

    A fresh large tensor costs a page fault per 4 KiB page on first touch, at every step; a reused
    buffer pays those faults once (SmolLM2's figures: ``docs/benchmarks.md``, "reasoner/logprobs.py").
    One lease holds it until the tensor it was handed dies (a forward's: its backward ran, or its graph
    was dropped); another lease meanwhile gets a fresh tensor."""

    def __init__(self, dtype: torch.dtype = torch.float32):
        self.buf, self.busy, self.dtype = None, False, dtype

    def lease(self, rows: int, V: int, device) -> torch.Tensor:
        if self.busy:
            return torch.empty(rows, V, device=device, dtype=self.dtype)
        if self.buf is None or self.buf.numel() < rows * V or self.buf.device != torch.device(device):
            self.buf = None  # free the old one first
            self.buf = torch.empty(rows * V, device=device, dtype=self.dtype)
        self.busy = True
        view = self.buf[:rows * V].view(rows, V)
        weakref.finalize(view, self._release)
        return view

    def _release(self) -> None:
        self.busy = False


_SOFTMAX_SPACE = _Workspace()
_BF16_GRAD_SPACE = _Workspace(torch.bfloat16)  # the head backward's bf16 d logits (bf16 weights)


class _HeadLogp(torch.autograd.Function):
    """logp = log_softmax(head(h) / temperature)[target], with a hand-written chunked backward."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, temperature, with_entropy):
        keep = None
        if hidden.shape[0] * weight.shape[0] <= HEAD_KEEP:
            keep = _SOFTMAX_SPACE.lease(hidden.shape[0], weight.shape[0], hidden.device)
        logp, ent, probs = _head_forward(weight, bias, hidden, targets, temperature, with_entropy, keep)
        ctx.save_for_backward(hidden, weight, bias, targets)
        ctx.probs, ctx.kept, ctx.temperature = (probs if keep is not None else None), keep, temperature
        ctx.mark_non_differentiable(ent)
        return logp, ent

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_logp, _grad_ent):
        hidden, weight, bias, targets = ctx.saved_tensors
        need = ctx.needs_input_grad[:3]
        if ctx.kept is not None:  # every chunk's softmax is in one [M, V] buffer: one pass over all rows
            d = _dlogits_(ctx.kept, targets, grad_logp, ctx.temperature)
            gh, gw, gb = _head_grads(d, hidden, weight, need)
        else:
            gh, gw, gb = _chunked_head_grads(hidden, weight, bias, targets, grad_logp, ctx.temperature, need)
        ctx.probs = ctx.kept = None  # the workspace is free again
        cast = lambda x, like: None if x is None else x.to(like.dtype)  # noqa: E731
        return gh, cast(gw, weight), (cast(gb, bias) if bias is not None else None), None, None, None


def _dlogits_(p: torch.Tensor, y: torch.Tensor, g: torch.Tensor, temperature: float) -> torch.Tensor:
    """d logp[y] / d logits, times g, in place over the softmax p [m, V] (float32):
    (onehot(y) - softmax) * g / temperature."""
    p.mul_(-g[:, None])
    p[torch.arange(len(y), device=y.device), y] += g
    if temperature > 0 and temperature != 1.0:
        p /= temperature
    return p


def _head_grads(d: torch.Tensor, h: torch.Tensor, weight: torch.Tensor, need):
    """(d hidden, d weight, d bias) from d logits [m, V] (float32), each None where not needed.

    The two matmuls run in the weights' dtype (a bf16 mm is several times faster on the CPU), each
    once over all m rows: the weight gradient [V, H] is as big as the head, so forming it per chunk
    and summing costs more than the arithmetic (``docs/benchmarks.md``, "reasoner/logprobs.py")."""
    if weight.dtype == torch.bfloat16:  # into the reused buffer (released when ``low`` dies, on return)
        low = _BF16_GRAD_SPACE.lease(*d.shape, d.device).copy_(d)
    else:
        low = d.to(weight.dtype)  # float32: d itself
    gh = torch.mm(low, weight) if need[0] else None
    gw = torch.mm(low.t(), h) if need[1] else None
    gb = d.sum(0) if need[2] else None
    return gh, gw, gb


def _chunked_head_grads(hidden, weight, bias, targets, grad_logp, temperature: float, need):
    """_head_grads chunk by chunk, each chunk's softmax recomputed (the forward kept none)."""
    rows = _chunk_rows(weight.shape[0])
    gh = torch.empty_like(hidden) if need[0] else None
    gw = gb = None
    for i, (h, y, g) in enumerate(zip(hidden.split(rows), targets.split(rows), grad_logp.split(rows))):
        d = _dlogits_(torch.softmax(_logits(weight, bias, h, temperature), -1), y, g, temperature)
        dh, dw, db = _head_grads(d, h, weight, need)
        if need[0]:
            gh[i * rows:i * rows + len(y)] = dh
        if need[1]:
            gw = dw.float() if gw is None else gw.add_(dw)
        if need[2]:
            gb = db if gb is None else gb.add_(db)
    return gh, gw, gb


def _autograd_head(head, hidden, targets, temperature: float, with_entropy: bool, entropy_grad: bool = False):
    """The plain autograd path (used under autocast): per-chunk logits recomputed in backward."""
    rows = _chunk_rows(head.out_features)
    recompute = hidden.shape[0] > rows
    outs = []
    for h, y in zip(hidden.split(rows), targets.split(rows)):
        fn = lambda h_, y_=y: _chunk_logp(head, h_, y_, temperature, with_entropy, entropy_grad)  # noqa: E731
        outs.append(checkpoint(fn, h, use_reentrant=False) if recompute else fn(h))
    logp = torch.cat([o[0] for o in outs]) if outs else hidden.new_zeros(0)
    ent = torch.cat([o[1] for o in outs]) if with_entropy and outs else None
    return logp, ent


def _chunk_logp(head, h, y, temperature: float, with_entropy: bool, entropy_grad: bool = False):
    logits = head(h).float()
    if temperature > 0 and temperature != 1.0:
        logits = logits / temperature
    logz = torch.logsumexp(logits, -1)
    logp = logits.gather(-1, y[:, None]).squeeze(-1) - logz
    if not with_entropy:
        return logp, logp.new_zeros(0)
    with torch.set_grad_enabled(entropy_grad and torch.is_grad_enabled()):
        ent = logz - (torch.softmax(logits, -1) * logits).sum(-1)
    return logp, ent


def _scatter(values: torch.Tensor, sel: torch.Tensor) -> torch.Tensor:
    out = values.new_zeros(sel.shape)
    return out.masked_scatter(sel, values)


def full_forward_logp(model, ids, mask, completion_ids, completion_mask, temperature, with_entropy,
                      entropy_grad=False):
    """The plain path (``reasoner.engine.PlainEngine``): the model's own logits on the last T+1 positions."""
    T = completion_ids.shape[1]
    out = model(input_ids=ids, attention_mask=mask.long(), position_ids=positions(mask), use_cache=False,
                logits_to_keep=T + 1)
    logits = out.logits[:, -T - 1:-1].float()  # [N, T, V]: position t predicts completion token t
    if temperature > 0 and temperature != 1.0:
        logits = logits / temperature
    logz = torch.logsumexp(logits, -1)
    keep = completion_mask.bool()
    logp = (logits.gather(-1, completion_ids[..., None]).squeeze(-1) - logz).masked_fill(~keep, 0.0)
    entropy = None
    if with_entropy:
        with torch.set_grad_enabled(entropy_grad and torch.is_grad_enabled()):
            entropy = (logz - (torch.softmax(logits, -1) * logits).sum(-1)).masked_fill(~keep, 0.0)
    return logp, entropy
