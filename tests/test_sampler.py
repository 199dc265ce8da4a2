"""The transformers sampler: exact sampled-token log-probs, greedy == HF generate, EOS handling."""
from __future__ import annotations

import pytest
import torch

from reasoner.logprobs import completion_logp
from reasoner.sampler import SamplingParams
from reasoner.sampler.transformers import TransformersSampler

PROMPTS = ["12+7=", "3-1=", "45+45=", "9="]  # different lengths: left padding is exercised


def _sampler(model, tok, eos_extra: int = 0, **kw) -> TransformersSampler:
    s = TransformersSampler(model, tok, **kw)
    if eos_extra:  # a random model rarely says EOS: let 10 ordinary tokens end a row too (ragged lengths)
        s.eos_ids = sorted(set(s.eos_ids) | set(range(10, 10 + eos_extra)))
    return s


def _full_forward_logp(model, roll, temperature):
    with torch.no_grad():
        return completion_logp(model, roll.prompt_ids, roll.prompt_mask, roll.completion_ids, roll.completion_mask,
                               temperature)[0]


@pytest.mark.parametrize("temperature, compact", [(1.0, 1.0), (0.7, 1.0), (1.3, 0.0), (1.0, 0.5)])
def test_sampled_logp_equals_full_forward(random_tiny_model, temperature, compact):
    """No truncation: the sampler's log-probs are the trainer's (top_k/min_p/top_p: tests/test_sampling_controls.py)."""
    model, tok = random_tiny_model
    s = _sampler(model, tok, eos_extra=10, compact=compact)
    roll = s.generate(PROMPTS, SamplingParams(n=4, temperature=temperature, max_new_tokens=12, seed=3))
    lengths = roll.lengths
    assert lengths.min() < 12 and lengths.max() == roll.completion_ids.shape[1]  # ragged: some rows ended early
    ref = _full_forward_logp(model, roll, temperature)
    m = roll.completion_mask
    torch.testing.assert_close(roll.logp[m], ref[m], atol=1e-5, rtol=0)
    assert (roll.logp[~m] == 0).all()
    # the mask is a prefix; a row ends at its first EOS, and only rows without one are truncated
    assert (m.long().cummin(-1).values == m.long()).all()
    eos = torch.tensor(s.eos_ids)
    last = roll.completion_ids.gather(1, (lengths - 1)[:, None]).squeeze(1)
    torch.testing.assert_close(roll.truncated, ~torch.isin(last, eos))
    assert not torch.isin(roll.completion_ids.masked_fill(~m, -1)[:, :-1][m[:, 1:]], eos).any()


def test_greedy_matches_hf_generate(random_tiny_model):
    model, tok = random_tiny_model
    T = 10
    roll = _sampler(model, tok).generate(PROMPTS, SamplingParams(n=3, temperature=0.0, max_new_tokens=T))
    enc = tok(PROMPTS, return_tensors="pt", padding=True, add_special_tokens=False)
    with torch.no_grad():
        hf = model.generate(**enc, do_sample=False, max_new_tokens=T, pad_token_id=tok.pad_token_id,
                            eos_token_id=tok.eos_token_id)[:, enc["input_ids"].shape[1]:]
    for i in range(len(PROMPTS)):
        want = hf[i].tolist()
        if tok.eos_token_id in want:
            want = want[:want.index(tok.eos_token_id) + 1]
        for j in range(3):  # the n greedy copies of a prompt are identical
            row = roll.completion_ids[i * 3 + j][roll.completion_mask[i * 3 + j]].tolist()
            assert row == want


def test_seeded_sampling_is_reproducible_and_chunking_is_consistent(random_tiny_model):
    model, tok = random_tiny_model
    p = SamplingParams(n=2, temperature=1.0, max_new_tokens=8, seed=11)
    a = _sampler(model, tok, eos_extra=10).generate(PROMPTS, p)
    b = _sampler(model, tok, eos_extra=10).generate(PROMPTS, p)
    assert torch.equal(a.completion_ids, b.completion_ids) and a.texts == b.texts
    greedy = SamplingParams(n=2, temperature=0.0, max_new_tokens=8)
    whole = _sampler(model, tok, eos_extra=10).generate(PROMPTS, greedy)
    parts = _sampler(model, tok, eos_extra=10, prompt_batch=3).generate(PROMPTS, greedy)  # 3 + 1 prompts
    for f in ("completion_ids", "completion_mask", "truncated"):
        assert torch.equal(getattr(whole, f), getattr(parts, f)), f
    torch.testing.assert_close(whole.logp, parts.logp, atol=1e-5, rtol=0)
    assert whole.texts == parts.texts


def test_rollout_tensors_work_with_autograd(random_tiny_model):
    """The sampler runs under inference mode; its outputs must still feed a training forward."""
    model, tok = random_tiny_model
    roll = _sampler(model, tok).generate(PROMPTS[:2], SamplingParams(n=2, max_new_tokens=4, seed=0))
    logp, _ = completion_logp(model, roll.prompt_ids, roll.prompt_mask, roll.completion_ids, roll.completion_mask)
    (logp * roll.completion_mask).sum().backward()
    assert model.lm_head.weight.grad is not None
    model.zero_grad(set_to_none=True)


@pytest.mark.parametrize("chunk, keep, lean", [(1 << 22, 1 << 27, True), (300, 1 << 27, True), (300, 0, True),
                                              (300, 1 << 27, False)])
def test_padding_free_head_equals_full_forward(random_tiny_model, monkeypatch, chunk, keep, lean):
    """Both backbones (models.fast's packed one, transformers' shared-prefix one) against the model's logits."""
    import reasoner.logprobs as lp

    model, tok = random_tiny_model
    if not lean:
        monkeypatch.setattr(lp.fast, "supports", lambda backbone: False)
    monkeypatch.setattr(lp, "HEAD_CHUNK", chunk)  # vocab 97: 300 logits = 3 rows per chunk
    monkeypatch.setattr(lp, "HEAD_KEEP", keep)  # 0: every chunk's softmax recomputed in the backward
    roll = _sampler(model, tok, eos_extra=10).generate(PROMPTS, SamplingParams(n=2, max_new_tokens=6, seed=5))
    args = (roll.prompt_ids, roll.prompt_mask, roll.completion_ids, roll.completion_mask)
    ids, mask = torch.cat(args[::2], 1), torch.cat(args[1::2], 1)
    m = roll.completion_mask
    ours = _logp_and_grads(model, lambda: lp.completion_logp(model, *args, 0.8, with_entropy=True), m)
    plain = _logp_and_grads(model, lambda: lp.full_forward_logp(model, ids, mask, roll.completion_ids, m, 0.8, True), m)
    _assert_same_logp_and_grads(ours, plain)


@pytest.mark.parametrize("keep", [1 << 27, 0])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_head_backward_equals_autograd_with_bias_and_temperature(monkeypatch, keep, dtype):
    """The hand-written head backward, over the kept softmax in one pass (keep) or chunk by chunk
    recomputed (0), against autograd through log_softmax, for the hidden states, weight and bias."""
    import reasoner.logprobs as lp

    monkeypatch.setattr(lp, "HEAD_CHUNK", 3 * 50)  # vocab 50: 3 rows per chunk, 4 chunks for 11 rows
    monkeypatch.setattr(lp, "HEAD_KEEP", keep)
    g = torch.Generator().manual_seed(0)
    head = torch.nn.Linear(8, 50).to(dtype)
    with torch.no_grad():
        head.weight.copy_(torch.randn(50, 8, generator=g))
        head.bias.copy_(torch.randn(50, generator=g))
    h0 = torch.randn(11, 8, generator=g).to(dtype)
    y = torch.randint(0, 50, (11,), generator=g)
    w = torch.rand(11, generator=g)  # a weighted sum makes every row's gradient differ

    def grads(fn):
        h = h0.clone().requires_grad_()
        head.zero_grad(set_to_none=True)
        (fn(h).float() * w).sum().backward()
        return h.grad.float(), head.weight.grad.float(), head.bias.grad.float()

    ours = grads(lambda h: lp.head_logp(head, h, y, 0.7, False)[0])
    plain = grads(lambda h: torch.log_softmax(head(h).float() / 0.7, -1).gather(-1, y[:, None]).squeeze(-1))
    tol = dict(atol=1e-5, rtol=1e-4) if dtype == torch.float32 else dict(atol=0.05, rtol=0.02)  # bf16: 8 bits
    for a, b in zip(ours, plain):
        torch.testing.assert_close(a, b, **tol)


def test_two_forwards_before_one_backward_keep_their_own_softmax(random_tiny_model):
    """The kept softmax lives in a reused workspace; a second forward before the first's backward
    must not overwrite it: gradients of logp1 + logp2 equal the plain forward's."""
    import reasoner.logprobs as lp

    model, tok = random_tiny_model
    roll = _sampler(model, tok, eos_extra=10).generate(PROMPTS, SamplingParams(n=2, max_new_tokens=6, seed=3))
    args = (roll.prompt_ids, roll.prompt_mask, roll.completion_ids, roll.completion_mask)
    ids, mask, m = torch.cat(args[::2], 1), torch.cat(args[1::2], 1), roll.completion_mask
    twice = lambda f: tuple(a + b for a, b in zip(f(), f()))  # noqa: E731  both graphs alive, one backward
    ours = _logp_and_grads(model, lambda: twice(lambda: lp.completion_logp(model, *args, 0.8, with_entropy=True)), m)
    plain = _logp_and_grads(model, lambda: twice(lambda: lp.full_forward_logp(model, ids, mask, roll.completion_ids, m,
                                                                          0.8, True)), m)
    _assert_same_logp_and_grads(ours, plain)
    assert not lp._SOFTMAX_SPACE.busy  # released by the backward
    logp, _ = lp.completion_logp(model, *args, 0.8)
    assert lp._SOFTMAX_SPACE.busy
    del logp  # a graph dropped without a backward frees the workspace too
    assert not lp._SOFTMAX_SPACE.busy


def _logp_and_grads(model, fn, mask):
    """(logp, entropy, parameter gradients of sum(logp * mask)) of one log-prob computation."""
    logp, ent = fn()
    (logp * mask).sum().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    return logp.detach(), ent, grads


def _assert_same_logp_and_grads(one, other):
    (a, ea, ga), (b, eb, gb) = one, other
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    torch.testing.assert_close(ea, eb, atol=1e-5, rtol=0)
    for x, y in zip(ga, gb):
        torch.testing.assert_close(x, y, atol=1e-5, rtol=1e-4)


def test_length_buckets_by_hand():
    from reasoner.logprobs import length_buckets

    lengths = torch.tensor([1, 8, 2, 8, 1, 7, 2, 8] * 2)  # 16 rows, T = 8: 128 padded positions
    mask = torch.arange(8)[None] < lengths[:, None]
    # 2 buckets of 8 rows (min_rows 8): the 8 shortest (1,1,1,1,2,2,2,2) -> width 2, the rest -> width 8:
    # 8*2 + 8*8 = 80 <= 0.85 * 128 = 108.8, so bucketing pays
    groups = length_buckets(mask, min_tokens=48)  # 128 - 80 = 48 positions saved
    assert [sorted(lengths[g].tolist()) for g in groups] == [[1, 1, 1, 1, 2, 2, 2, 2], [7, 7, 8, 8, 8, 8, 8, 8]]
    assert len(length_buckets(mask, min_tokens=49)) == 1  # too few positions saved to pay for more calls
    assert len(length_buckets(torch.ones(16, 8, dtype=torch.bool))) == 1  # equal lengths: nothing to save
    assert len(length_buckets(mask[:15])) == 1  # fewer than 2 * min_rows rows
    # each extra bucket call must save call_tokens positions: 1 extra call, 48 saved
    assert len(length_buckets(mask, min_tokens=0, call_tokens=48)) == 2
    assert len(length_buckets(mask, min_tokens=0, call_tokens=49)) == 1


def test_call_tokens_scale_with_depth_over_size():
    from reasoner.logprobs import CALL_WORK_PER_LAYER, _call_tokens

    flat = torch.nn.Linear(1000, 1000)  # 1,001,000 parameters, no config: 1 layer
    assert _call_tokens(flat) == CALL_WORK_PER_LAYER // 1_001_000 == 67  # 2^26 / 1.001e6 = 67.04
    deep = torch.nn.Linear(1000, 1000)
    deep.config = type("C", (), {"num_hidden_layers": 4})()
    assert _call_tokens(deep) == 4 * CALL_WORK_PER_LAYER // 1_001_000 == 268  # 4 * 2^26 / 1.001e6 = 268.2


def test_bucketed_logp_equals_one_batch(random_tiny_model, monkeypatch):
    import reasoner.logprobs as lp

    model, tok = random_tiny_model
    monkeypatch.setattr(lp.fast, "supports", lambda backbone: False)  # buckets serve the padded (transformers) path
    roll = _sampler(model, tok, eos_extra=10).generate(PROMPTS, SamplingParams(n=8, max_new_tokens=12, seed=2))
    args = (roll.prompt_ids, roll.prompt_mask, roll.completion_ids, roll.completion_mask)
    out, real = [], lp.length_buckets
    for buckets in (lambda m, **kw: real(m, min_saving=0.0, min_tokens=0),
                    lambda m, **kw: [torch.arange(m.shape[0])]):
        monkeypatch.setattr(lp, "length_buckets", buckets)
        assert len(buckets(roll.completion_mask)) == (4 if not out else 1)
        out.append(_logp_and_grads(model, lambda: lp.completion_logp(model, *args, 1.0, with_entropy=True),
                                   roll.completion_mask))
    _assert_same_logp_and_grads(*out)


def test_inverse_cdf_by_hand():
    from reasoner.sampler.transformers import inverse_cdf_at

    w = torch.tensor([[0.0, 1.0, 0.0, 3.0]] * 4)  # cdf 0, 1, 1, 4
    u = torch.tensor([[0.0], [0.2], [0.25], [0.999999]])  # u * 4 = 0, 0.8, 1.0, ~4
    # first cdf > v: v=0 -> index 1 (index 0 has weight 0); 0.8 -> 1; 1.0 -> 3 (index 2 has weight 0); ~4 -> 3
    assert inverse_cdf_at(w, u).tolist() == [1, 1, 3, 3]


def test_sampled_token_frequencies_match_softmax():
    from reasoner.sampler.transformers import sample_tokens

    logits = torch.tensor([[0.0, 1.0, float("-inf"), 2.0]]).repeat(20000, 1)
    tok, logp = sample_tokens(logits, SamplingParams(n=1, temperature=1.0, top_p=1.0, seed=0), torch.Generator().manual_seed(0))
    p = torch.softmax(logits[0], -1)  # e^0, e^1, 0, e^2 over their sum: 0.090, 0.245, 0, 0.665
    freq = torch.bincount(tok, minlength=4).float() / len(tok)
    torch.testing.assert_close(freq, p, atol=0.015, rtol=0)  # ~4 standard errors at n = 20000
    torch.testing.assert_close(logp, p.log()[tok])


def test_reused_workspace_draws_the_same_tokens_and_log_probs():
    """The decode loop's buffers (reused across steps, fewer rows after compaction) change no value."""
    from reasoner.sampler.transformers import Workspace, sample_tokens

    g = torch.Generator().manual_seed(0)
    logits = (torch.randn(6, 40, generator=g) * 3).bfloat16()
    work = Workspace()
    for temperature, top_k in ((1.0, 0), (0.7, 5), (0.0, 0)):
        params = SamplingParams(n=1, temperature=temperature, top_k=top_k, seed=0)
        for rows in (6, 3):  # fewer rows: a view of the same buffer
            want = sample_tokens(logits[:rows], params, torch.Generator().manual_seed(rows))
            got = sample_tokens(logits[:rows], params, torch.Generator().manual_seed(rows), work)
            assert torch.equal(want[0], got[0]) and torch.equal(want[1], got[1])
    cpu = torch.device("cpu")
    assert work.take("x", torch.Size([2, 40]), cpu).data_ptr() == work.take("x", torch.Size([6, 40]), cpu).data_ptr()


def test_finished_rows_leave_at_half_or_when_their_work_is_big():
    from reasoner import threads

    s = object.__new__(TransformersSampler)  # only the compaction rule: no model run
    s.compact, s.model = None, torch.nn.Linear(128, 384)  # 49,152 multiply-adds per row
    assert not s._compact_now(40, 64)  # 24 finished rows x 49,152 = 1.2M < MIN_MACS: they ride along
    assert s._compact_now(32, 64)  # half the batch has ended
    assert not s._compact_now(0, 64) and not s._compact_now(64, 64)  # nothing left / nothing ended
    s.model = torch.nn.Linear(576, 49152)  # 28.3M multiply-adds per row: one finished row is worth a gather
    assert 28_311_552 >= threads.MIN_MACS and s._compact_now(63, 64)
    s.compact = 0.0  # an explicit share overrides the rule: never
    assert not s._compact_now(1, 64)
