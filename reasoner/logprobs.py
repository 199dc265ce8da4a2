"""Per-token log-probs (and entropy) of sampled completions under a model."""
from __future__ import annotations

import torch

from reasoner.sampler.transformers import _positions


def completion_logp(model, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, completion_ids: torch.Tensor,
                    completion_mask: torch.Tensor, temperature: float = 1.0, with_entropy: bool = False):
    """Return (logp [N, T], entropy [N, T] or None) of completion tokens given their prompts.

    prompt_ids/prompt_mask: [N, P] left padded; completion_ids/completion_mask: [N, T].
    Logits are divided by the sampling temperature, matching the sampler's log-probs.
    Only the last T+1 positions go through the LM head.
    """
    ids = torch.cat([prompt_ids, completion_ids], 1)  # [N, P+T]
    mask = torch.cat([prompt_mask, completion_mask], 1)
    T = completion_ids.shape[1]
    out = model(input_ids=ids, attention_mask=mask.long(), position_ids=_positions(mask), use_cache=False,
                logits_to_keep=T + 1)
    logits = out.logits[:, -T - 1:-1].float()  # [N, T, V]: position t predicts completion token t
    if temperature > 0 and temperature != 1.0:
        logits = logits / temperature
    logz = torch.logsumexp(logits, -1)
    logp = logits.gather(-1, completion_ids[..., None]).squeeze(-1) - logz
    entropy = None
    if with_entropy:
        with torch.no_grad():
            p = torch.softmax(logits, -1)
            entropy = logz - (p * logits).sum(-1)
    return logp, entropy
