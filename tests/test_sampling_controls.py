"""sampling.top_k / min_p / stop: processing by hand, the sampler's log-probs against a full forward
under the same processing, stop strings, tokens unchanged with everything off, config and vLLM mapping."""
from __future__ import annotations

import math

import pytest
import torch

from reasoner.models.fast import positions
from reasoner.sampler import SamplingParams, processing
from reasoner.sampler.stops import StopStrings, can_end, cut
from reasoner.sampler.transformers import TransformersSampler, inverse_cdf_at

PROMPTS = ["12+7=", "3-1=", "45+45=", "9="]
NEG_INF = float("-inf")


def _params(**kw) -> SamplingParams:
    return SamplingParams(**{"temperature": 1.0, **kw})


# ---------------------------------------------------------------- processing by hand (exact dyadic weights)

W = torch.tensor([[8.0, 4.0, 2.0, 1.0, 1.0]])  # probabilities 8/16, 4/16, 2/16, 1/16, 1/16


@pytest.mark.parametrize("kw, kept", [
    ({"top_k": 2}, [8, 4, 0, 0, 0]),  # the two largest
    ({"top_k": 4}, [8, 4, 2, 1, 1]),  # the 4th largest (1) ties with the 5th: both kept (vLLM, HF)
    ({"top_k": 99}, [8, 4, 2, 1, 1]),  # k >= V: nothing dropped
    ({"min_p": 0.25}, [8, 4, 2, 0, 0]),  # keep w >= 0.25 * 8 = 2 (2 itself is kept)
    ({"min_p": 0.3}, [8, 4, 0, 0, 0]),  # 0.3 * 8 = 2.4
    ({"top_p": 0.75}, [8, 4, 0, 0, 0]),  # mass before each: 0, 8, 12, 14, 15 of 16; drop where >= 12
    ({"top_p": 0.8}, [8, 4, 2, 0, 0]),  # drop where >= 12.8: from the 4th token on
    ({"top_k": 3, "top_p": 0.7}, [8, 4, 0, 0, 0]),  # top_k leaves 8, 4, 2 (14); before: 0, 8, 12 >= 9.8
])
def test_truncate_by_hand(kw, kept):
    torch.testing.assert_close(processing.truncate(W, _params(**kw)), torch.tensor([kept], dtype=torch.float32))


def test_order_is_vllms_min_p_before_top_p():
    # weights 16, 12, 4 and eight 1s (total 40): probabilities 0.4, 0.3, 0.1, 0.025 x 8; top_p 0.8, min_p 0.1.
    # vLLM (min_p first): 0.1 * 16 = 1.6 drops the 1s; 16, 12, 4 (32) renormalised; top_p: mass before
    #   0, 16, 28 against 0.8 * 32 = 25.6 drops the third -> 16, 12 kept: probabilities 4/7, 3/7.
    # transformers (top_p first): mass before 0, 16, 28, 32 against 0.8 * 40 = 32 keeps 16, 12, 4; min_p keeps
    #   them all -> 1/2, 3/8, 1/8. The two orders differ; we follow vLLM.
    w = torch.tensor([[16.0, 12.0, 4.0] + [1.0] * 8])
    p = _params(top_p=0.8, min_p=0.1)
    torch.testing.assert_close(processing.truncate(w, p), torch.tensor([[16.0, 12.0] + [0.0] * 9]))
    got = processing.log_probs(w.log(), p)
    torch.testing.assert_close(got[0, :2], torch.tensor([math.log(4 / 7), math.log(3 / 7)]))
    assert (got[0, 2:] == NEG_INF).all()


def test_log_probs_by_hand():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
    # temperature 0.5: x = 4, 2, 0, -2; top_k 2 keeps 4, 2: log-probs 4 - log(e^4 + e^2) = -log(1 + e^-2)
    # and 2 - log(e^4 + e^2) = -log(1 + e^2); the others -inf
    got = processing.log_probs(logits, _params(temperature=0.5, top_k=2))
    want = torch.tensor([[-math.log1p(math.exp(-2)), -math.log1p(math.exp(2)), NEG_INF, NEG_INF]])
    torch.testing.assert_close(got, want)
    # temperature 1, min_p 0.3: probabilities relative to the largest e^0, e^-1, e^-2, e^-3 = 1, .37, .14, .05:
    # keeps the first two: log-probs -log(1 + e^-1), -1 - log(1 + e^-1)
    got = processing.log_probs(logits, _params(min_p=0.3))
    z = math.log1p(math.exp(-1))
    torch.testing.assert_close(got, torch.tensor([[-z, -1 - z, NEG_INF, NEG_INF]]))
    # no truncation: the tempered softmax; greedy (temperature 0): the raw softmax, processing ignored
    torch.testing.assert_close(processing.log_probs(logits, _params(temperature=0.5)), (logits / 0.5).log_softmax(-1))
    torch.testing.assert_close(processing.log_probs(logits, _params(temperature=0.0, top_k=1)), logits.log_softmax(-1))


def test_sampled_tokens_follow_the_processed_distribution():
    from reasoner.sampler.transformers import sample_tokens

    logits = torch.tensor([[math.log(8), math.log(4), math.log(2), 0.0, 0.0]]).repeat(20000, 1)  # W above
    p = _params(top_k=3)  # 8, 4, 2 kept: probabilities 4/7, 2/7, 1/7
    tok, logp = sample_tokens(logits, p, torch.Generator().manual_seed(0))
    freq = torch.bincount(tok, minlength=5).float() / len(tok)
    torch.testing.assert_close(freq, torch.tensor([4 / 7, 2 / 7, 1 / 7, 0, 0]), atol=0.015, rtol=0)
    torch.testing.assert_close(logp, torch.tensor([4 / 7, 2 / 7, 1 / 7]).log()[tok])
    greedy_tok, greedy_logp = sample_tokens(logits[:2], _params(temperature=0.0, top_k=1, min_p=0.5), None)
    assert greedy_tok.tolist() == [0, 0]  # greedy as before: argmax, log-prob under the raw softmax
    torch.testing.assert_close(greedy_logp, torch.full((2,), math.log(8 / 16)))


# ---------------------------------------------------------------- the sampler against a full forward


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    """The trained tiny model (peaked distributions: truncation drops real mass) and its tokenizer."""
    from reasoner.config import ModelConfig
    from reasoner.models import load_model

    model, tok = load_model(ModelConfig(name=str(tiny_model_dir)))
    return model.float().eval(), tok


def _forward_logp(model, roll, params: SamplingParams) -> torch.Tensor:
    """Log-probs [N, T] of the sampled tokens: one forward over prompt + completion, then ``params``' processing."""
    ids = torch.cat([roll.prompt_ids, roll.completion_ids], 1)
    mask = torch.cat([roll.prompt_mask, roll.completion_mask], 1)
    T = roll.completion_ids.shape[1]
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask.long(), position_ids=positions(mask)).logits[:, -T - 1:-1]
    return processing.log_probs(logits, params).gather(-1, roll.completion_ids[..., None]).squeeze(-1)


@pytest.mark.parametrize("kw, compact, lean", [
    ({"top_k": 3}, 1.0, True),
    ({"temperature": 1.3, "min_p": 0.05}, 0.0, True),
    ({"temperature": 0.8, "top_p": 0.9}, None, True),
    ({"temperature": 1.2, "top_k": 8, "min_p": 0.02, "top_p": 0.95}, 0.5, True),
    ({"temperature": 1.2, "top_k": 8, "min_p": 0.02, "top_p": 0.95}, 1.0, False),  # the transformers forward
])
def test_sampled_logp_equals_full_forward_under_the_same_processing(tiny, kw, compact, lean):
    model, tok = tiny
    params = SamplingParams(n=4, max_new_tokens=8, seed=7, **{"temperature": 1.0, **kw})
    roll = TransformersSampler(model, tok, compact=compact, lean=lean).generate(PROMPTS, params)
    m = roll.completion_mask
    ref = _forward_logp(model, roll, params)
    torch.testing.assert_close(roll.logp[m], ref[m], atol=1e-5, rtol=0)
    plain = _forward_logp(model, roll, SamplingParams(temperature=params.temperature))
    assert (roll.logp[m] - plain[m]).max() > 1e-3  # the processing mattered: kept tokens gained mass
    assert (roll.logp[m] >= plain[m] - 1e-5).all()  # renormalising over fewer tokens never lowers a log-prob


# ---------------------------------------------------------------- with everything off nothing changes


def _legacy_sample_tokens(logits, params, gen, work=None):
    """``sample_tokens`` before top_k/min_p/stop (commit 724e85a): log-probs before top-p truncation,
    top-p dropping a token when the mass before it exceeds (not reaches) top_p."""
    x = logits.float()
    if params.temperature <= 0:
        tok = x.argmax(-1)
        return tok, x.gather(-1, tok[:, None]).squeeze(-1) - torch.logsumexp(x, -1)
    if params.temperature != 1.0:
        x = x / params.temperature
    m = x.amax(-1, keepdim=True)
    w = (x - m).exp_()
    logz = m.squeeze(-1) + w.sum(-1).log()
    if params.top_p < 1.0:
        sorted_w, idx = w.sort(-1, descending=True)
        cum = sorted_w.cumsum(-1)
        drop = cum - sorted_w > params.top_p * cum[:, -1:]
        w = torch.zeros_like(w).scatter_(-1, idx, sorted_w.masked_fill_(drop, 0.0))
    tok = inverse_cdf_at(w, torch.rand(w.shape[0], 1, generator=gen, device=w.device, dtype=w.dtype))
    return tok, x.gather(-1, tok[:, None]).squeeze(-1) - logz


@pytest.mark.parametrize("temperature, top_p, compact", [(1.0, 1.0, 1.0), (1.3, 1.0, None), (0.0, 1.0, 0.0),
                                                         (0.7, 0.9, 1.0)])
def test_with_processing_off_tokens_and_logp_are_the_old_ones(random_tiny_model, monkeypatch, temperature, top_p, compact):
    import reasoner.sampler.transformers as st

    model, tok = random_tiny_model
    params = SamplingParams(n=4, temperature=temperature, top_p=top_p, max_new_tokens=12, seed=3)
    new = TransformersSampler(model, tok, compact=compact).generate(PROMPTS, params)
    monkeypatch.setattr(st, "sample_tokens", _legacy_sample_tokens)
    old = TransformersSampler(model, tok, compact=compact).generate(PROMPTS, params)
    for f in ("completion_ids", "completion_mask", "truncated"):
        assert torch.equal(getattr(new, f), getattr(old, f)), f
    assert new.texts == old.texts
    if top_p == 1.0:  # no truncation: the log-probs are bit for bit the old ones
        assert torch.equal(new.logp, old.logp)
    else:  # top_p: same tokens, log-probs now renormalised over the kept set
        assert (new.logp[new.completion_mask] > old.logp[old.completion_mask]).any()


# ---------------------------------------------------------------- stop strings


def _text(tok, ids) -> str:
    return tok.decode(ids, skip_special_tokens=True)


def test_stop_strings_end_rows_where_the_unstopped_run_first_holds_one(random_tiny_model):
    """Compaction off: every step draws for the same rows, so a stopped run is the unstopped one cut at the
    token that completes a stop string (kept, not truncated, the text before the stop string)."""
    model, tok = random_tiny_model
    base = SamplingParams(n=4, max_new_tokens=12, seed=5)
    free = TransformersSampler(model, tok, compact=0.0).generate(PROMPTS, base)
    long_rows = [t for t in free.texts if len(t) >= 8]
    stop = (long_rows[0][3:5], long_rows[1][6])  # a two-token string and a one-token one, both sampled
    roll = TransformersSampler(model, tok, compact=0.0).generate(PROMPTS, SamplingParams(**{**base.__dict__,
                                                                                              "stop": stop}))
    n_stopped = 0
    for i in range(len(PROMPTS) * 4):
        ids = free.completion_ids[i][free.completion_mask[i]].tolist()
        end = next((k + 1 for k in range(len(ids)) if any(s in _text(tok, ids[:k + 1]) for s in stop)), None)
        got = roll.completion_ids[i][roll.completion_mask[i]].tolist()
        if end is None:  # never held a stop string: the same row as without stop strings
            assert got == ids and roll.texts[i] == free.texts[i] and roll.truncated[i] == free.truncated[i]
            continue
        n_stopped += 1
        assert got == ids[:end] and not roll.truncated[i]
        assert roll.texts[i] == cut(_text(tok, ids[:end]), stop) and not any(s in roll.texts[i] for s in stop)
        torch.testing.assert_close(roll.logp[i, :end], free.logp[i, :end], atol=0, rtol=0)
    assert n_stopped >= 2


@pytest.mark.parametrize("compact, lockstep", [(1.0, False), (None, False), (0.0, True)])
def test_stopped_rows_end_at_the_completing_token(random_tiny_model, compact, lockstep):
    model, tok = random_tiny_model
    stop = ("ab", *"0123456789")  # ten one-char strings: most rows stop within 16 tokens
    s = TransformersSampler(model, tok, compact=compact, lockstep=lockstep)
    roll = s.generate(PROMPTS, SamplingParams(n=4, max_new_tokens=16, seed=2, stop=stop))
    kinds = set()
    for i in range(roll.completion_ids.shape[0]):
        ids = roll.completion_ids[i][roll.completion_mask[i]].tolist()
        text = _text(tok, ids)
        if roll.truncated[i]:  # ran to max_new_tokens without a stop string or EOS
            assert len(ids) == 16 and not any(x in text for x in stop) and roll.texts[i] == text
            kinds.add("truncated")
        elif ids[-1] in s.eos_ids:
            assert not any(x in text for x in stop)
            kinds.add("eos")
        else:  # the last token completes a stop string; the text stops before it
            assert any(x in text for x in stop) and not any(x in _text(tok, ids[:-1]) for x in stop)
            assert roll.texts[i] == cut(text, stop)
            kinds.add("stop")
    assert "stop" in kinds


def test_stop_checker_by_hand(random_tiny_model):
    _, tok = random_tiny_model
    st = StopStrings(tok, ("</a>", "\u00e9!"), vocab=len(tok) + 3)  # 4 bytes; 3 bytes (é is 2)
    assert st.window == 5 and st.can_end.shape == (len(tok) + 3,)
    ends = {t for t in range(len(tok)) if st.can_end[t] and _text(tok, [t])}
    assert ends == {tok.convert_tokens_to_ids(">"), tok.convert_tokens_to_ids("!")}  # visible tokens ending one
    assert st.can_end[len(tok):].all()  # padded vocabulary ids: candidates
    tails = torch.tensor([tok.encode(x, add_special_tokens=False) for x in ("1</a>", "</b>2")])
    assert st.found(tails).tolist() == [True, False]
    assert cut("x</a>y\u00e9!z", st.stop) == "x" and cut("xy", st.stop) == "xy"
    assert cut("x\u00e9!</a>", st.stop) == "x\u00e9!"  # both end in one token: the first listed wins, as in vLLM
    with pytest.raises(ValueError, match="non-empty"):
        StopStrings(tok, ("",), vocab=len(tok))


class _SentencePieceLike:
    """Pieces joined, "▁" read as a space, the text's leading space dropped (as SentencePiece decodes)."""

    pieces = ("<eos>", "a", "\u2581b", "c", "\u2581", "\ufffd")

    def __len__(self):
        return len(self.pieces)

    def encode(self, text, add_special_tokens=False):
        return [self.pieces.index(text)]

    def decode(self, ids, skip_special_tokens=True):
        text = "".join(self.pieces[i] for i in ids if i or not skip_special_tokens).replace("\u2581", " ")
        return text.removeprefix(" ")

    def batch_decode(self, rows, skip_special_tokens=True):
        return [self.decode(r, skip_special_tokens) for r in rows]


def test_can_end_keeps_the_leading_space_a_lone_token_loses():
    tok = _SentencePieceLike()
    # stop "c " ends with a space: "▁b" alone decodes to "b", after the anchor "a" to "a b": it can end it.
    # <eos> (empty text) and the replacement character (part of a character) stay candidates; "a", "c" cannot.
    assert can_end(tok, ("c ",), vocab=6).tolist() == [True, False, True, False, True, True]


# ---------------------------------------------------------------- config, build and the vLLM mapping


def test_config_keys_parse_and_validate(tmp_path):
    from reasoner.build import sampling_params
    from reasoner.config import ConfigError, load_config, save_config

    cfg = load_config(None, ["sampling.top_k=20", "sampling.min_p=0.05", "sampling.stop=</answer>,###"])
    assert (cfg.sampling.top_k, cfg.sampling.min_p, cfg.sampling.stop) == (20, 0.05, ["</answer>", "###"])
    assert load_config(None, ['sampling.stop=["\\n\\n", "a,b"]']).sampling.stop == ["\n\n", "a,b"]  # JSON: escapes
    assert load_config(None, ["sampling.stop="]).sampling.stop == [] == load_config(None, ["sampling.stop=[]"]).sampling.stop
    f = tmp_path / "c.yaml"
    f.write_text('sampling:\n  stop: ["</answer>", "\\n\\n"]\n  top_k: 5\n')
    assert load_config(f).sampling.stop == ["</answer>", "\n\n"]
    save_config(cfg, tmp_path / "saved.yaml")  # a resume reads the list back
    assert load_config(None, base=tmp_path / "saved.yaml").sampling.stop == ["</answer>", "###"]
    p = sampling_params(cfg.sampling)
    assert (p.n, p.top_k, p.min_p, p.stop, p.top_p) == (cfg.sampling.group_size, 20, 0.05, ("</answer>", "###"), 1.0)
    for bad, msg in [("sampling.top_k=-1", "sampling.top_k=-1 must be >= 0"),
                     ("sampling.top_k=2.5", "sampling.top_k: expected int"),
                     ("sampling.min_p=1", r"sampling.min_p=1.0 must be in \[0, 1\)"),
                     ("sampling.min_p=-0.1", "sampling.min_p=-0.1 must be in"),
                     ("sampling.stop=[1, 2]", "sampling.stop: expected a list of strings"),
                     ("sampling.stop=[a", "sampling.stop: cannot parse"),
                     ('sampling.stop=["x", ""]', "sampling.stop=.*empty stop string")]:
        with pytest.raises(ConfigError, match=msg):
            load_config(None, [bad])


def test_training_eval_uses_the_training_processing_and_stops():
    from reasoner.benchmarks import TrainingEval
    from reasoner.types import Problem, Rollout

    class Recorder:
        def __init__(self):
            self.calls = []

        def generate(self, prompts, params):
            self.calls.append(params)
            rows = len(prompts) * params.n
            return Rollout(prompt_ids=torch.zeros(rows, 1, dtype=torch.long),
                           prompt_mask=torch.ones(rows, 1, dtype=torch.bool),
                           completion_ids=torch.zeros(rows, 1, dtype=torch.long),
                           completion_mask=torch.ones(rows, 1, dtype=torch.bool), logp=torch.zeros(rows, 1),
                           truncated=torch.zeros(rows, dtype=torch.bool), texts=["\\boxed{2}"] * rows)

    probs = [Problem("p/0", "1+1=", "2", source="t")]
    sampler = Recorder()
    TrainingEval(sampler, (probs, ["1+1="]), {}, 8, samples=2, temperature=0.7, top_p=0.9, top_k=5, min_p=0.1,
                 stop=("</a>",))(step=0)
    greedy, sampled = sampler.calls
    assert (greedy.temperature, greedy.stop) == (0.0, ("</a>",))
    assert (sampled.n, sampled.temperature, sampled.top_p, sampled.top_k, sampled.min_p, sampled.stop) == (
        2, 0.7, 0.9, 5, 0.1, ("</a>",))


def test_to_vllm_params_maps_top_k_min_p_and_stop():
    from reasoner.sampler.vllm import request_seed, to_vllm_params

    p = SamplingParams(n=2, temperature=0.8, top_p=0.95, top_k=20, min_p=0.05, stop=["</answer>", "\n\n"], seed=1)
    assert p.stop == ("</answer>", "\n\n")  # a list becomes a tuple
    assert to_vllm_params(p, index=2) == {"n": 2, "temperature": 0.8, "top_p": 0.95, "max_tokens": 16,
                                          "seed": request_seed(1, 2, 2),
                                          "logprobs": 0, "skip_special_tokens": True, "top_k": 20, "min_p": 0.05,
                                          "stop": ["</answer>", "\n\n"]}
    off = to_vllm_params(SamplingParams())  # off: left to vLLM's own default, which is off in every release
    assert not {"top_k", "min_p", "stop"} & set(off)
    assert SamplingParams(stop="###").stop == ("###",)
