"""Problems in: named sets, local files, hub datasets; prompts out.

    load_problems("gsm8k", "test", cfg.data)        # a named set (see DATASETS / `reasoner list`)
    load_problems("my/problems.jsonl.gz", "train", cfg.data)   # a local file
    load_problems("hub:owner/name", "train", cfg.data)         # datasets.load_dataset
    prompt = render(problem, tokenizer, cfg.data)

``load_problems`` returns ``Problems`` (a ``list[Problem]``) whose ``skipped`` and
``errors`` attributes report rows skipped under ``data.skip_bad_rows``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .named import DATASETS, NamedSet, load_named
from .render import render, render_all, to_messages
from .sources import (DataError, Problems, Schema, build_problems, detect_schema, gsm8k_answer, is_data_file,
                      last_boxed, read_file, read_hub)

__all__ = ["DATASETS", "DataError", "NamedSet", "Problems", "Schema", "load_problems", "render", "render_all",
           "to_messages", "last_boxed", "gsm8k_answer", "read_file", "detect_schema"]


def load_problems(spec: str, split: str, cfg: Any) -> Problems:
    """A named set, a local file (or a directory holding ``<split>.<ext>``), or a hub id."""
    if spec in DATASETS:
        return load_named(spec, split, cfg)
    path = Path(spec).expanduser()
    if path.is_dir():
        path = _split_file(path, split)
    if path.is_file():
        return _few_shot_guard(build_problems(read_file(path), path.name, field_map=cfg.field_map,
                                              skip_bad=cfg.skip_bad_rows), cfg, spec)
    if is_data_file(spec) or spec.startswith((".", "/", "~")):
        where = "" if path.is_absolute() else f" (from {Path.cwd()})"
        raise DataError(f"data file not found: {spec}{where}; give an existing .jsonl, .json, .csv or .parquet "
                        f"file, a directory holding {split}.<one of those>, or a named set (reasoner list)")
    return _few_shot_guard(_load_hub(spec, split, cfg), cfg, spec)


def _split_file(d: Path, split: str) -> Path:
    found = sorted(p for p in d.iterdir() if p.name.split(".")[0] == split and is_data_file(p))
    if not found:
        raise DataError(f"directory {d} holds no file for split {split!r} (looked for {split}.jsonl, .json, "
                        f".parquet, .csv, optionally .gz)")
    return found[0]


def _load_hub(spec: str, split: str, cfg: Any) -> Problems:
    name = spec[4:] if spec.startswith("hub:") else spec
    hub_id, _, config = name.partition(":")  # hub:owner/name[:config]
    try:
        rows = list(read_hub(hub_id, split, config or None))
    except Exception as e:
        raise DataError(f"{spec!r} is not a named set (valid: {', '.join(DATASETS.names())}; `reasoner list`), not a "
                        f"local file, and loading it from the hub failed ({type(e).__name__}: {str(e)[:200]})") from None
    return build_problems(rows, hub_id, field_map=cfg.field_map, skip_bad=cfg.skip_bad_rows)


def _few_shot_guard(problems: Problems, cfg: Any, spec: str) -> Problems:
    if getattr(cfg, "few_shot", 0) > 0:
        raise DataError(f"data.few_shot={cfg.few_shot} needs a named set with examples; {spec!r} is not one")
    return problems
