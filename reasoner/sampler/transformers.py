"""Group sampling with a transformers causal LM: one prompt pass, cache expanded G times.

The decode loop is ours rather than ``model.generate`` so that the prompt is encoded once
per problem (its KV cache repeated for the G samples), the sampled tokens' log-probs come
out of the same softmax that drew them, and finished rows stop costing Python work.
The distribution is ``processing``'s (temperature, top_k, min_p, top_p: vLLM's order); stop
strings end rows as in vLLM (``stops``).
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import torch
from transformers.cache_utils import DynamicLayer

from reasoner import threads
from reasoner.models import fast, packed
from reasoner.models.fast import positions
from reasoner.sampler import SamplingParams, processing
from reasoner.sampler.stops import StopStrings, cut
from reasoner.types import Rollout, cat_rollouts


def sample_tokens(logits: torch.Tensor, params: SamplingParams, gen: torch.Generator | None,
                  work: Workspace | None = None):
    """Draw one token per row from logits [R, V]; return (tokens [R], logp [R]).

    The distribution is ``processing``'s: softmax(logits / temperature) truncated by top_k, min_p
    and top_p (in that order) and renormalised; logp is the drawn token's log-prob under it, as
    vLLM reports with ``logprobs_mode="processed_logprobs"``. With no truncation (top_k 0, min_p 0,
    top_p 1) that is softmax(logits / temperature), the distribution the trainer recomputes, so
    with one PPO epoch ratio == 1 exactly; tokens and log-probs are then what they always were.
    Temperature 0 is greedy: the argmax, with its log-prob under softmax(logits).
    Sampling inverts the cumulative distribution at one uniform draw per row (exact, and
    on CPU several times cheaper than ``torch.multinomial``, which draws V exponentials).
    work: the decode loop's reused [R, V] float32 buffers (fresh tensors of that size cost
    page faults at every step); the values are the same either way.
    """
    work = work if work is not None else Workspace()
    x = work.take("x", logits.shape, logits.device).copy_(logits)  # float32
    if params.temperature <= 0:
        tok = x.argmax(-1)
        return tok, _picked(x, tok) - torch.logsumexp(x, -1)
    if params.temperature != 1.0:
        x.div_(params.temperature)
    m = x.amax(-1, keepdim=True)
    w = processing.truncate(torch.sub(x, m, out=work.take("w", x.shape, x.device)).exp_(), params)  # max 1; dropped 0
    total = w.sum(-1)
    tok = _inverse_cdf(w, gen)
    return tok, _picked(x, tok) - (m.squeeze(-1) + total.log())


class Workspace:
    """Named float32 buffers reused across calls: ``take(name, shape, device)`` is a [rows, V] view
    of the buffer (reallocated when it is too small or elsewhere), its contents undefined."""

    def __init__(self):
        self._bufs: dict[str, torch.Tensor] = {}

    def take(self, name: str, shape: torch.Size, device: torch.device) -> torch.Tensor:
        buf = self._bufs.get(name)
        if buf is None or buf.shape[0] < shape[0] or buf.shape[1:] != shape[1:] or buf.device != device:
            buf = self._bufs[name] = torch.empty(shape, dtype=torch.float32, device=device)
        return buf[:shape[0]]


def _picked(x: torch.Tensor, tok: torch.Tensor) -> torch.Tensor:
    return x.gather(-1, tok[:, None]).squeeze(-1)


def _inverse_cdf(w: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
    """One index per row drawn with probability w / w.sum(-1) (w >= 0, some w > 0 per row); w is
    overwritten (its cumulative sum, in place)."""
    u = torch.rand(w.shape[0], 1, generator=gen, device=w.device, dtype=w.dtype)
    return inverse_cdf_at(w, u, inplace=True)


def inverse_cdf_at(w: torch.Tensor, u: torch.Tensor, inplace: bool = False) -> torch.Tensor:
    """Per row, the first index whose cumulative weight exceeds u * total (u [R, 1] in [0, 1)).

    A zero-weight index never exceeds its predecessor's cumulative weight, so it is never picked.
    inplace: w becomes its cumulative sum (no new [R, V] tensor).
    """
    cdf = w.cumsum_(-1) if inplace else w.cumsum(-1)
    total = cdf[:, -1:]
    v = torch.minimum(u * total, torch.nextafter(total, torch.zeros_like(total)))  # strictly below the total
    return torch.searchsorted(cdf, v, right=True).squeeze(-1)


class TransformersSampler:
    """Sampler backend over a ``transformers`` model (CPU or GPU).

    compact: finished rows leave the decode batch (their KV cache rows are gathered away)
    once the live share of the batch falls to this fraction or below; 1.0 drops them at
    every step, 0.0 never (they then ride along, masked, until the longest row ends).
    None (default): at half, or as soon as the finished rows' matmul work per step reaches
    ``threads.MIN_MACS``. Each compaction gathers every layer's KV cache; on an overhead-bound
    model (the tiny one) finished rows riding along masked cost less than gathering at every
    step (figures: ``docs/benchmarks.md``, "reasoner/sampler/transformers.py").
    lockstep: decode all max_new_tokens steps with every row, never leaving early, so that
    every rank makes the same forward calls (FSDP's parameter all-gathers need that).
    lean: decode through ``models.fast`` where it supports the model (``run.engine=fast``);
    False: the transformers forward (``run.engine=plain``).
    """

    def __init__(self, model, tokenizer, device: str | torch.device = "cpu", prompt_batch: int = 64,
                 compact: float | None = None, lockstep: bool = False, lean: bool = True):
        self.model, self.tokenizer = model, tokenizer
        self.device = torch.device(device)
        self.prompt_batch = prompt_batch  # prompts per forward batch (N = prompt_batch * n rows)
        self.compact, self.lockstep = (0.0, True) if lockstep else (compact, False)
        self.lean = lean
        self.eos_ids = _eos_ids(model, tokenizer)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_ids[0]
        self._stops: dict[tuple, StopStrings] = {}  # (stop strings, vocabulary size) -> their checker
        self._work = Workspace()  # sampling's [rows, V] buffers, kept between calls

    def sync_weights(self, model) -> None:
        self.model = model  # same process, same tensors: nothing to copy

    def generate(self, prompts: list[str], params: SamplingParams) -> Rollout:
        with torch.no_grad() if self.lockstep else torch.inference_mode():  # FSDP's buffers reject inference mode
            chunks = [self._generate(prompts[i:i + self.prompt_batch], params, i)
                      for i in range(0, len(prompts), self.prompt_batch)]
            roll = chunks[0] if len(chunks) == 1 else cat_rollouts(chunks, self.pad_id)
        return _clone(roll)  # ordinary tensors again: the trainer feeds them to autograd

    def _generate(self, prompts: list[str], params: SamplingParams, offset: int) -> Rollout:
        """1. encode prompts once  2. expand the KV cache to n rows each  3. decode until EOS or a stop string."""
        gen = None
        if params.seed is not None:
            gen = torch.Generator(device=self.device).manual_seed(params.seed + offset)
        enc = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        ids, pmask = enc["input_ids"].to(self.device), enc["attention_mask"].to(self.device)
        was_training = self.model.training
        self.model.eval()
        try:
            lean = _lean(self.model) if self.lean else None
            with threads.for_rows(self.model, len(prompts) * params.n):  # a decode step's rows
                logits, cache = self._forward(lean, ids, pmask, positions(pmask), None)
                stops = self._stop_strings(params.stop, logits.shape[-1])
                toks, logps, lengths, done, stopped = self._decode(lean, cache, logits, pmask, params, gen, stops)
        finally:
            self.model.train(was_training)
        n, steps = params.n, max(int(lengths.max()), 1)
        toks, logps = toks[:, :steps], logps[:, :steps]
        cmask = torch.arange(steps, device=self.device)[None] < lengths[:, None]
        texts = self.tokenizer.batch_decode(toks.masked_fill(~cmask, self.pad_id), skip_special_tokens=True)
        if stops is not None:  # the text ends before the stop string (vLLM: include_stop_str_in_output=False)
            texts = [cut(t, stops.stop) if hit else t for t, hit in zip(texts, stopped.tolist())]
        return Rollout(prompt_ids=ids.repeat_interleave(n, 0), prompt_mask=pmask.bool().repeat_interleave(n, 0),
                       completion_ids=toks, completion_mask=cmask, logp=logps.masked_fill(~cmask, 0.0),
                       truncated=~done, texts=texts)

    def _stop_strings(self, stop: tuple[str, ...], vocab: int) -> StopStrings | None:
        """The stop strings' checker (built once per stop set: it decodes the vocabulary once)."""
        if not stop:
            return None
        if (stop, vocab) not in self._stops:
            self._stops[stop, vocab] = StopStrings(self.tokenizer, stop, vocab, self.device)
        return self._stops[stop, vocab]

    def _decode(self, lean, cache, logits, pmask, params: SamplingParams, gen, stops: StopStrings | None = None):
        """The token loop over the live rows; per rollout row: (tokens, logps, lengths, ended with EOS or
        a stop string, ended with a stop string)."""
        n, T = params.n, params.max_new_tokens
        if n > 1:
            logits = logits.repeat_interleave(n, 0)
        expand(cache, n, T)
        rows = logits.shape[0]
        toks = torch.full((rows, T), self.pad_id, dtype=torch.long, device=self.device)
        logps = torch.zeros(rows, T, device=self.device)
        lengths = torch.zeros(rows, dtype=torch.long, device=self.device)
        done = torch.zeros(rows, dtype=torch.bool, device=self.device)
        stopped = torch.zeros(rows, dtype=torch.bool, device=self.device)
        eos = torch.tensor(self.eos_ids, device=self.device)
        where = torch.arange(rows, device=self.device)  # batch row -> rollout row
        live = torch.ones(rows, dtype=torch.bool, device=self.device)  # batch rows still decoding
        mask = torch.ones(rows, pmask.shape[1] + T, dtype=pmask.dtype, device=self.device)
        mask[:, :pmask.shape[1]] = pmask.repeat_interleave(n, 0)
        pos = pmask.sum(-1).repeat_interleave(n, 0)[:, None]  # next position id per batch row
        width = pmask.shape[1]
        for t in range(T):
            tok, lp = sample_tokens(logits, params, gen, self._work)
            rec = where[live]
            toks[rec, t], logps[rec, t] = tok[live], lp[live]
            lengths[rec] += 1
            ended = live & torch.isin(tok, eos)
            if stops is not None:
                hit = _stop_hits(stops, tok, live & ~ended, where, toks, t)
                stopped[where[hit]] = True
                ended |= hit
            done[where[ended]] = True
            live = live & ~ended
            n_live = int(live.sum())
            if (n_live == 0 and not self.lockstep) or t + 1 == T:
                break
            if self._compact_now(n_live, live.shape[0]):
                keep = live.nonzero().squeeze(1)
                cache.batch_select_indices(keep)
                where, tok, mask, pos, live = where[keep], tok[keep], mask[keep], pos[keep], live[keep]
            width += 1
            logits, cache = self._forward(lean, tok[:, None], mask[:, :width], pos, cache)
            pos = pos + 1
        return toks, logps, lengths, done, stopped

    def _compact_now(self, n_live: int, rows: int) -> bool:
        if n_live == 0 or n_live == rows:
            return False
        if self.compact is not None:
            return n_live <= self.compact * rows
        return n_live <= rows // 2 or (rows - n_live) * (threads.matmul_width(self.model) or 0) >= threads.MIN_MACS

    def _forward(self, lean, ids, mask, pos, cache):
        """(logits [N, V] of the last position, the cache extended by ids [N, q]).

        mask [N, past + q]; pos [N, q]. With ``lean`` (``_lean``: Llama-family)
        models.fast's forward and its KVCache; else the transformers forward and a DynamicCache."""
        if lean is not None:
            hidden, cache = fast.forward_hidden(lean.backbone, ids, mask[:, -ids.shape[1]:], pos, cache, lean.proj)
            return lean.head(hidden[:, -1]), cache
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=pos, past_key_values=cache,
                         use_cache=True, logits_to_keep=1)  # the LM head only on the last position
        return out.logits[:, -1], out.past_key_values


def _stop_hits(stops: StopStrings, tok, live, where, toks, t: int) -> torch.Tensor:
    """Batch rows (of ``live``) whose completion text now holds a stop string: only the rows whose new
    token ``tok`` can end one are decoded, and only their last ``stops.window`` tokens (up to step t)."""
    hit = torch.zeros_like(live)
    idx = (live & stops.can_end[tok]).nonzero().squeeze(1)
    if idx.numel():
        tails = toks[where[idx], max(0, t + 1 - stops.window):t + 1]
        hit[idx[stops.found(tails)]] = True
    return hit


class Lean(NamedTuple):
    backbone: torch.nn.Module
    head: Callable  # hidden [N, H] -> logits [N, V]
    proj: object  # fast.ModuleProjections or packed.PackedProjections


def _lean(model) -> Lean | None:
    """models.fast's parts for ``model`` (None: the transformers forward), with decoding's fused,
    prepacked projections where models.packed supports them (bf16 on the CPU)."""
    parts = fast.lean_parts(model)
    if parts is None:
        return None
    pk = packed.for_model(*parts)
    return Lean(parts[0], parts[1], fast.ModuleProjections) if pk is None else Lean(parts[0], pk.head, pk)


class GrowingLayer(DynamicLayer):
    """A DynamicLayer whose keys/values are views of buffers with room for ``extra`` more tokens:
    each decode step writes its token in place instead of copying the whole cache (torch.cat)."""

    def __init__(self, layer: DynamicLayer, extra: int):
        super().__init__()
        k, v = layer.keys, layer.values
        self.dtype, self.device, self.is_initialized, self._len = k.dtype, k.device, True, k.shape[-2]
        self._k = k.new_empty(*k.shape[:-2], self._len + extra, k.shape[-1])
        self._v = v.new_empty(*v.shape[:-2], self._len + extra, v.shape[-1])
        self._k[..., :self._len, :], self._v[..., :self._len, :] = k, v
        self._views()

    def _views(self) -> None:
        self.keys, self.values = self._k[..., :self._len, :], self._v[..., :self._len, :]

    def update(self, key_states, value_states, *args, **kwargs):
        end = self._len + key_states.shape[-2]
        if end > self._k.shape[-2]:
            raise ValueError(f"GrowingLayer holds {self._k.shape[-2]} positions; {end} were asked for")
        self._k[..., self._len:end, :], self._v[..., self._len:end, :] = key_states, value_states
        self._len = end
        self._views()
        return self.keys, self.values

    def crop(self, tokens_to_remove: int) -> None:
        self._len -= abs(tokens_to_remove)
        self._views()

    def batch_repeat_interleave(self, repeats: int) -> None:
        self._k, self._v = self._k.repeat_interleave(repeats, 0), self._v.repeat_interleave(repeats, 0)
        self._views()

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self._k, self._v = self._k[indices], self._v[indices]
        self._views()


def expand(cache, repeats: int, extra: int) -> None:
    """Repeat each row of a prompt-pass cache ``repeats`` times and make room for ``extra`` positions
    (transformers caches: each plain DynamicLayer becomes a GrowingLayer)."""
    if isinstance(cache, fast.KVCache):
        return cache.reserve(extra, repeats)
    if repeats > 1:
        cache.batch_repeat_interleave(repeats)
    layers = getattr(cache, "layers", None) or []
    for i, layer in enumerate(layers):
        if type(layer) is DynamicLayer and layer.is_initialized and layer.keys.numel():
            layers[i] = GrowingLayer(layer, extra)


def _eos_ids(model, tokenizer) -> list[int]:
    ids = getattr(model.generation_config, "eos_token_id", None)
    ids = ids if isinstance(ids, list) else [ids]
    ids = [i for i in ids + [tokenizer.eos_token_id] if i is not None]
    if not ids:
        raise ValueError("the tokenizer and model define no EOS token; set tokenizer.eos_token")
    return sorted(set(ids))


def _clone(r: Rollout) -> Rollout:
    return r.map(torch.clone)  # tensors made in inference mode: copies that autograd may use
