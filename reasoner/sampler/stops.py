"""Stop strings for the transformers sampler, checked at each decode step without decoding much.

A row ends at the token that completes a stop string: that token is its last (kept in the
completion and its mask, like EOS), the row is not truncated, and its text ends just before the
stop string (vLLM's default, ``include_stop_str_in_output=False``). A decode step looks only at
the live rows whose new token can end a stop string (``can_end``, decided once per tokenizer and
stop set), and decodes only their last ``window`` tokens: enough to hold the longest stop
string, since every token adds at least one byte of text.
"""
from __future__ import annotations

import torch

REPLACEMENT = "\ufffd"  # what a token holding part of a multi-byte character decodes to


class StopStrings:
    """The stop strings of one generate call, for one tokenizer and vocabulary size."""

    def __init__(self, tokenizer, stop: tuple[str, ...], vocab: int, device: str | torch.device = "cpu"):
        if not stop or not all(isinstance(s, str) and s for s in stop):
            raise ValueError(f"stop strings must be non-empty strings, got {stop!r}")
        self.tokenizer, self.stop = tokenizer, tuple(stop)
        self.window = max(len(s.encode("utf-8")) for s in stop) + 1  # one more: the token before the string
        self.can_end = can_end(tokenizer, self.stop, vocab).to(device)  # [V] bool, indexed by the new tokens

    def found(self, tails: torch.Tensor) -> torch.Tensor:
        """Per row of tails [R, W] (the last completion tokens, newest last): its text holds a stop string."""
        texts = self.tokenizer.batch_decode(tails.tolist(), skip_special_tokens=True)
        return torch.tensor([contains(t, self.stop) for t in texts], dtype=torch.bool, device=tails.device)


def can_end(tokenizer, stop: tuple[str, ...], vocab: int) -> torch.Tensor:
    """[max(vocab, len(tokenizer))] bool: a stop string may end inside the token's text, that is the
    text holds a stop string or begins with the end of one (a non-empty suffix of it).

    Each token is decoded after an anchor token ("a"), whose text is then removed, so that a
    leading space that a lone SentencePiece token would lose is kept. A token stays a candidate
    when its text is empty, holds part of a multi-byte character, or does not extend the
    anchor's text; ids past the tokenizer's (padded vocabularies) are candidates too.
    """
    n = len(tokenizer)
    mask = torch.ones(max(vocab, n), dtype=torch.bool)
    anchor = tokenizer.encode("a", add_special_tokens=False)
    if tokenizer.decode(anchor, skip_special_tokens=True) != "a":
        anchor = []
    prefix = "a" if anchor else ""
    texts = tokenizer.batch_decode([anchor + [i] for i in range(n)], skip_special_tokens=True)
    ends = {s[i:] for s in stop for i in range(len(s))}  # every non-empty suffix of every stop string
    longest = max(map(len, stop))
    for i, text in enumerate(texts):
        rest = text[len(prefix):] if text.startswith(prefix) else ""
        mask[i] = (not rest or REPLACEMENT in rest or contains(rest, stop)
                   or any(rest[:j] in ends for j in range(1, min(len(rest), longest) + 1)))
    return mask


def contains(text: str, stop: tuple[str, ...]) -> bool:
    return any(s in text for s in stop)


def cut(text: str, stop: tuple[str, ...]) -> str:
    """The text before the stop string that ended it: the first of ``stop``, in order, that occurs,
    at its first occurrence (vLLM's rule); all of it when none occurs."""
    for s in stop:
        at = text.find(s)
        if at >= 0:
            return text[:at]
    return text
