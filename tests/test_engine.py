"""The engine boundary: the fast engine gives what one plain transformers pass gives."""
import pytest
import torch
from torch.testing import assert_close

from reasoner import engine
from reasoner.config import ConfigError, load_config


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir).float()


def _inputs(vocab: int):
    """Six rows: three prompts (one left padded) each twice, as a group shares its prompt;
    completions of 5, 1, 3, 5, 2, 4 tokens."""
    g = torch.Generator().manual_seed(0)
    prompts = torch.randint(3, vocab, (3, 4), generator=g)
    pmask = torch.ones(3, 4, dtype=torch.bool)
    prompts[1, 0], pmask[1, 0] = 0, False
    pids, pmask = prompts.repeat_interleave(2, 0), pmask.repeat_interleave(2, 0)
    cmask = torch.arange(5)[None] < torch.tensor([5, 1, 3, 5, 2, 4])[:, None]
    cids = torch.randint(3, vocab, (6, 5), generator=g) * cmask
    return pids, pmask, cids, cmask


def _logp_and_grads(eng, model, inputs):
    model.zero_grad()
    logp, ent = eng.logp(model, *inputs, temperature=0.7, with_entropy=True)
    with eng.sized(model, int(inputs[3].sum())):
        (logp * torch.linspace(-1, 1, logp.numel()).view_as(logp)).sum().backward()
    return logp.detach(), ent.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_fast_log_probs_entropies_and_gradients_equal_the_plain_pass(model):
    inputs = _inputs(model.config.vocab_size)
    plain = _logp_and_grads(engine.get("plain"), model, inputs)
    fast = _logp_and_grads(engine.get("fast"), model, inputs)
    assert_close(fast[0], plain[0], atol=1e-5, rtol=1e-5)
    assert_close(fast[1], plain[1], atol=1e-5, rtol=1e-5)
    assert (plain[0][~inputs[3]] == 0).all() and (plain[0][inputs[3]] < 0).all()
    assert plain[2].keys() == fast[2].keys() and len(plain[2]) > 0
    for name in plain[2]:
        assert_close(fast[2][name], plain[2][name], atol=1e-5, rtol=1e-4, msg=name)


def test_fast_hidden_states_equal_the_plain_pass(model):
    inputs = _inputs(model.config.vocab_size)
    with torch.no_grad():
        h_plain = engine.get("plain").hidden(model.model, *inputs)
        h_fast = engine.get("fast").hidden(model.model, *inputs)
    mask = inputs[3]
    assert h_plain.shape == h_fast.shape == (6, 5, model.config.hidden_size)
    assert_close(h_fast[mask], h_plain[mask], atol=1e-5, rtol=1e-5)


def test_the_engine_is_a_config_choice():
    assert load_config(None, ["run.engine=plain"]).run.engine == "plain"
    with pytest.raises(ConfigError, match="run.engine='gpu' is not valid; choose one of: fast, plain"):
        load_config(None, ["run.engine=gpu"])


def test_a_run_is_the_same_with_either_engine(run_args, learnable_problems, tmp_path):
    """Same seeds, same sampled tokens: the logged losses agree to float rounding."""
    import json

    from reasoner.trainer import train

    rows = {}
    for name in ("fast", "plain"):
        out = tmp_path / name
        train(load_config(None, run_args("run.steps=2", "algo.beta=0.1", "run.eval_every=0", "run.save_every=0",
                                         "optim.lr=3e-3", f"data.train={learnable_problems}",
                                         f"data.eval={learnable_problems}", f"run.out_dir={out}",
                                         f"run.engine={name}")))
        rows[name] = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()][1:]
    for a, b in zip(rows["fast"], rows["plain"], strict=True):
        assert a["reward/mean"] == b["reward/mean"] and a["length/mean"] == b["length/mean"]
        for key in ("loss/kl", "loss/policy", "update/grad_norm"):
            assert_close(torch.tensor(b[key]), torch.tensor(a[key]), rtol=1e-4, atol=1e-6)
