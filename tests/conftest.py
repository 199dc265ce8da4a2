"""Shared fixtures: a quickly built tiny model (a few warm-start steps), cached across runs."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import reasoner  # noqa: F401  (imported before torch: sets OMP_WAIT_POLICY)
from reasoner import verifiers
from _paths import SHARED_DATA  # $REASONER_DATA_DIR, else ../shared/data beside the checkout


@pytest.fixture(scope="session")
def tiny_model_dir() -> Path:
    """A small Qwen2-style model with the embedded char tokenizer, 40 supervised steps.

    Not the default recipe (that one aims at 10-60 % accuracy and takes longer); good
    enough for plumbing tests. Cached under ~/.cache/reasoner (or $REASONER_CACHE).
    """
    from reasoner.models.tiny import build_tiny

    return build_tiny(None, max_steps=40, target_accuracy=None, test_size=0, verbose=False)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real benchmark data not found at {SHARED_DATA}")
    return SHARED_DATA


@verifiers.register("first_char_is_1")
def _first_char_is_1(completion, problem):
    """A reward the tiny model can learn within a few steps."""
    ok = completion.strip().startswith("1")
    return verifiers.Verdict(float(ok), "correct" if ok else "wrong", completion[:1], "")


@pytest.fixture(scope="session")
def learnable_problems(tmp_path_factory) -> Path:
    """64 JSONL problems ``a+b=`` scored by ``first_char_is_1``."""
    rows = [{"problem": f"{a}+{b}=", "answer": str(a + b), "verifier": "first_char_is_1"}
            for a, b in zip(range(10, 74), range(20, 84))]
    p = tmp_path_factory.mktemp("learnable") / "problems.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return p


@pytest.fixture
def keep_threads():
    """Restore torch's thread count after a test that runs the trainer (run.threads sets it)."""
    import torch

    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@pytest.fixture
def run_args(tiny_model_dir, tmp_path):
    """Config overrides for a few quick steps on the tiny model, writing to tmp_path/run; extra ones last."""
    def make(*extra: str) -> list[str]:
        return [f"model.name={tiny_model_dir}", f"run.out_dir={tmp_path / 'run'}", "run.progress=false",
                "run.batch_size=4", "sampling.group_size=4", "sampling.max_new_tokens=4", "data.eval_size=8",
                "run.threads=2", *extra]
    return make


@pytest.fixture(scope="module")
def random_tiny_model():
    """A random fp32 model with the tiny architecture and the char tokenizer (built in a second):
    long, varied completions; one per test module."""
    import torch
    from transformers import Qwen2ForCausalLM

    from reasoner.models import prepare_tokenizer, set_generation_ids
    from reasoner.models.tiny import TinyRecipe, build_config, build_tokenizer

    tok = build_tokenizer()
    prepare_tokenizer(tok)
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(build_config(TinyRecipe(layers=2), tok)).float()
    set_generation_ids(model, tok)
    return model.eval(), tok
