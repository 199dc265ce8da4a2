"""Per-token log-probs (and entropy) of sampled completions under a model.

Rows that share a prompt (the G samples of a group) share its forward pass: the backbone
encodes each distinct prompt once, its KV cache is gathered to the rows (differentiably, so
gradients flow back through it), and the completions run on top. The LM head then runs only on the positions
that predict a real completion token (no prompt, no padding), in row chunks of at most
``HEAD_CHUNK`` logits each. With several chunks and gradients on, each chunk's logits are
recomputed in the backward pass instead of kept (the ``[N, T, vocab]`` tensor of a large
vocabulary is never materialised). Models whose head is not a plain projection (logit
soft-capping or scaling) take the full forward instead.
"""
from __future__ import annotations

import torch
from torch.utils.checkpoint import checkpoint

from reasoner.sampler.transformers import _positions

HEAD_CHUNK = 1 << 22  # logits per LM-head chunk (16 MiB in fp32)
_HEAD_ATTRS = ("final_logit_softcapping", "logit_scale", "output_multiplier", "lm_head_multiplier", "logits_scaling")


def completion_logp(model, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, completion_ids: torch.Tensor,
                    completion_mask: torch.Tensor, temperature: float = 1.0, with_entropy: bool = False):
    """Return (logp [N, T], entropy [N, T] or None) of completion tokens given their prompts.

    prompt_ids/prompt_mask: [N, P] left padded; completion_ids/completion_mask: [N, T].
    Logits are divided by the sampling temperature, matching the sampler's log-probs.
    Positions outside completion_mask get log-prob 0 and entropy 0.
    """
    order = length_buckets(completion_mask)
    if len(order) > 1:  # rows of similar length together, each bucket trimmed to its longest row
        T = completion_ids.shape[1]
        outs = [_bucket(model, prompt_ids[i], prompt_mask[i], completion_ids[i], completion_mask[i], temperature,
                        with_entropy, T) for i in order]
        back = torch.cat(order).argsort()  # bucket-major rows -> original rows
        logp = torch.cat([o[0] for o in outs])[back]
        return logp, (torch.cat([o[1] for o in outs])[back] if with_entropy else None)
    return _logp_rows(model, prompt_ids, prompt_mask, completion_ids, completion_mask, temperature, with_entropy)


def length_buckets(completion_mask: torch.Tensor, max_buckets: int = 4, min_saving: float = 0.15,
                   min_rows: int = 8, min_tokens: int = 256) -> list[torch.Tensor]:
    """Row indices in up to max_buckets groups of similar completion length, or one group when
    bucketing would cut the padded completion positions by less than min_saving of them or by
    fewer than min_tokens (each bucket costs extra forward calls: small cuts do not pay)."""
    N, T = completion_mask.shape
    everyone = [torch.arange(N, device=completion_mask.device)]
    if N < 2 * min_rows or T == 0:
        return everyone
    lengths = completion_mask.sum(-1)
    order = lengths.argsort()
    k = min(max_buckets, N // min_rows)
    groups = list(order.tensor_split(k))
    padded = sum(len(g) * int(lengths[g].max()) for g in groups)
    saved = N * T - padded
    return groups if saved >= min_saving * N * T and saved >= min_tokens else everyone


def _bucket(model, pids, pmask, cids, cmask, temperature, with_entropy, width):
    t = max(int(cmask.sum(-1).max()), 1)
    logp, ent = _logp_rows(model, pids, pmask, cids[:, :t], cmask[:, :t], temperature, with_entropy)
    pad = lambda x: torch.nn.functional.pad(x, (0, width - t))  # noqa: E731
    return pad(logp), (pad(ent) if with_entropy else None)


def _logp_rows(model, prompt_ids, prompt_mask, completion_ids, completion_mask, temperature, with_entropy):
    ids = torch.cat([prompt_ids, completion_ids], 1)  # [N, P+T]
    mask = torch.cat([prompt_mask, completion_mask], 1)
    T = completion_ids.shape[1]
    parts = split_head(model)
    if parts is None:
        return _full_forward(model, ids, mask, completion_ids, completion_mask, temperature, with_entropy)
    backbone, head = parts
    if _can_share(backbone, prompt_ids, prompt_mask):
        hidden = shared_prefix_hidden(backbone, prompt_ids, prompt_mask, completion_ids, completion_mask)
    else:
        hidden = backbone(input_ids=ids, attention_mask=mask.long(), position_ids=_positions(mask),
                          use_cache=False).last_hidden_state[:, -T - 1:-1]  # [N, T, H]: position t predicts token t
    sel = completion_mask.bool()
    logp_flat, ent_flat = head_logp(head, hidden[sel], completion_ids[sel], temperature, with_entropy)
    logp = _scatter(logp_flat, sel)
    return logp, (_scatter(ent_flat, sel) if with_entropy else None)


def shared_prefix_hidden(backbone, prompt_ids, prompt_mask, completion_ids, completion_mask) -> torch.Tensor:
    """Hidden states [N, T, H] predicting each completion token, each distinct prompt encoded once."""
    key = torch.cat([prompt_ids, prompt_mask.long()], 1)
    uniq, inv = torch.unique(key, dim=0, return_inverse=True)  # inv[i]: row i's distinct prompt
    P = prompt_ids.shape[1]
    u_ids, u_mask = uniq[:, :P], uniq[:, P:]
    out = backbone(input_ids=u_ids, attention_mask=u_mask, position_ids=_positions(u_mask), use_cache=True)
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


def split_head(model):
    """(backbone, lm_head) of a causal LM whose logits are exactly lm_head(hidden); else None."""
    get_head = getattr(model, "get_output_embeddings", None)
    head = get_head() if get_head else None
    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # PEFT: layers are patched in place
    backbone = getattr(base, getattr(base, "base_model_prefix", "model") or "model", None)
    cfg = getattr(base, "config", None)
    if type(model).__name__.startswith("FSDP"):  # FSDP2 hooks live on the root module's forward
        return None
    if not isinstance(head, torch.nn.Linear) or backbone is None or backbone is base or cfg is None:
        return None
    text_cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
    if any(getattr(text_cfg, a, None) not in (None, 1.0) for a in _HEAD_ATTRS):
        return None
    return backbone, head


def head_logp(head: torch.nn.Linear, hidden: torch.Tensor, targets: torch.Tensor, temperature: float,
              with_entropy: bool):
    """log p(target) (and entropy) of rows hidden [M, H] under softmax(head(hidden) / temperature), chunked."""
    rows = max(1, HEAD_CHUNK // head.out_features)
    recompute = torch.is_grad_enabled() and hidden.requires_grad and hidden.shape[0] > rows
    outs = []
    for h, y in zip(hidden.split(rows), targets.split(rows)):
        fn = lambda h_, y_=y: _chunk_logp(head, h_, y_, temperature, with_entropy)  # noqa: E731
        outs.append(checkpoint(fn, h, use_reentrant=False) if recompute else fn(h))
    logp = torch.cat([o[0] for o in outs]) if outs else hidden.new_zeros(0)
    ent = torch.cat([o[1] for o in outs]) if with_entropy and outs else None
    return logp, ent


def _chunk_logp(head, h, y, temperature: float, with_entropy: bool):
    logits = head(h).float()
    if temperature > 0 and temperature != 1.0:
        logits = logits / temperature
    logz = torch.logsumexp(logits, -1)
    logp = logits.gather(-1, y[:, None]).squeeze(-1) - logz
    if not with_entropy:
        return logp, logp.new_zeros(0)
    with torch.no_grad():
        ent = logz - (torch.softmax(logits, -1) * logits).sum(-1)
    return logp, ent


def _scatter(values: torch.Tensor, sel: torch.Tensor) -> torch.Tensor:
    out = values.new_zeros(sel.shape)
    return out.masked_scatter(sel, values)


def _full_forward(model, ids, mask, completion_ids, completion_mask, temperature, with_entropy):
    """The plain path: the model's own logits on the last T+1 positions."""
    T = completion_ids.shape[1]
    out = model(input_ids=ids, attention_mask=mask.long(), position_ids=_positions(mask), use_cache=False,
                logits_to_keep=T + 1)
    logits = out.logits[:, -T - 1:-1].float()  # [N, T, V]: position t predicts completion token t
    if temperature > 0 and temperature != 1.0:
        logits = logits / temperature
    logz = torch.logsumexp(logits, -1)
    keep = completion_mask.bool()
    logp = (logits.gather(-1, completion_ids[..., None]).squeeze(-1) - logz).masked_fill(~keep, 0.0)
    entropy = None
    if with_entropy:
        with torch.no_grad():
            entropy = (logz - (torch.softmax(logits, -1) * logits).sum(-1)).masked_fill(~keep, 0.0)
    return logp, entropy
