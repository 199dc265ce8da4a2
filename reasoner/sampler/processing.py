"""What sampling does to the next-token scores before it draws: the one place that decides it.

    logits / temperature -> top_k -> min_p -> top_p -> renormalise over the tokens kept

This is vLLM's order (v1 sampler: temperature, then its argmax-invariant logits processors,
min_p by default, then top-k/top-p). ``transformers``' ``generate`` applies min_p after top_p
instead (temperature, top_k, top_p, min_p). top_k and min_p commute (each keeps an upper set of
the sorted probabilities, and min_p's threshold is relative to the maximum, which renormalising
does not move), so the two orders differ only when top_p < 1 and min_p > 0 are set together:
then min_p first drops the tail, the survivors are renormalised, and top_p reaches its mass
sooner. We follow vLLM so that both backends sample, and report log-probs of, one distribution.

* top_k (0 = off): keep the k most likely tokens (ties with the k-th are kept, as in vLLM and HF);
* min_p (0 = off): keep the tokens whose probability is at least min_p times the largest;
* top_p (1 = off): keep the smallest set of most likely tokens whose mass reaches top_p (a token
  is dropped when the mass of the tokens before it already reaches top_p; the first is kept);
* temperature 0 is greedy: argmax of the raw logits, nothing truncated, log-probs of the raw
  softmax (vLLM's greedy path reports the same).

The sampled token's log-prob is under the processed, renormalised distribution (vLLM's
``logprobs_mode="processed_logprobs"``); with no truncation that is softmax(logits / T).
"""
from __future__ import annotations

import torch

from reasoner.sampler import SamplingParams


def truncates(params: SamplingParams) -> bool:
    """Whether the processing drops any token (top_k, min_p or top_p on); else it is softmax(logits / T)."""
    return params.top_k > 0 or params.min_p > 0 or params.top_p < 1.0


def truncate(w: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """Zero the tokens the processing drops; w [..., V] are unnormalised probabilities (w >= 0,
    some w > 0 per row) of the tempered distribution. Kept entries are returned unchanged."""
    if params.top_k > 0:
        w = top_k(w, params.top_k)
    if params.min_p > 0:
        w = min_p(w, params.min_p)
    if params.top_p < 1.0:
        w = top_p(w, params.top_p)
    return w


def top_k(w: torch.Tensor, k: int) -> torch.Tensor:
    """Zero all but the k largest weights per row (every weight equal to the k-th largest is kept)."""
    if k >= w.shape[-1]:
        return w
    kth = w.topk(k, dim=-1).values[..., -1:]
    return w.masked_fill(w < kth, 0.0)


def min_p(w: torch.Tensor, p: float) -> torch.Tensor:
    """Zero the weights below p times the row's largest."""
    return w.masked_fill(w < p * w.amax(-1, keepdim=True), 0.0)


def top_p(w: torch.Tensor, p: float) -> torch.Tensor:
    """Zero all but the smallest set of most likely tokens whose probability reaches p."""
    sorted_w, idx = w.sort(-1, descending=True)
    cum = sorted_w.cumsum(-1)
    drop = cum - sorted_w >= p * cum[..., -1:]  # the mass before this token already reaches p
    return torch.zeros_like(w).scatter_(-1, idx, sorted_w.masked_fill_(drop, 0.0))


def log_probs(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """Log-probs [..., V] of every token under the distribution sampling draws from (-inf where
    the processing drops a token); what ``sample_tokens`` reports for the token it draws."""
    x = logits.float()
    if params.temperature <= 0:
        return x.log_softmax(-1)
    if params.temperature != 1.0:
        x = x / params.temperature
    x = x - x.amax(-1, keepdim=True)
    w = truncate(x.exp(), params)
    return (x - w.sum(-1, keepdim=True).log()).masked_fill(w == 0, float("-inf"))
