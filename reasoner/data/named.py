"""The registry of named problem sets: hub id, field mapping, answer extraction, local copy.

A named set is looked up first in a local directory (``DataConfig.data_dir``, else
``$REASONER_DATA_DIR``) as ``<dir>/<name>/<file>``, then on the Hugging Face hub. Each set
carries its default instruction (what ``render`` appends when ``data.instruction`` is
unset) and, where one exists, the split its few-shot examples come from.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from reasoner.data.synthetic import make_problems
from reasoner.registry import Registry
from reasoner.types import Problem

from .sources import (FILE_SUFFIXES, DataError, Problems, Schema, build_problems, gsm8k_answer, read_file,
                      read_hub, with_schema_overrides)

BOXED = "Please reason step by step, and put your final answer within \\boxed{}."
HUMANEVAL = "Complete the following Python function. Give the whole function in a ```python code block."
MBPP = "Write a Python function for this task. Give the code in a ```python code block."


@dataclass(frozen=True)
class NamedSet:
    name: str
    description: str
    splits: tuple[str, ...]  # splits one may ask for
    schema: Schema | None = None  # None: detected from the first record
    files: dict[str, tuple[str, ...]] = field(default_factory=dict)  # split -> file names under <dir>/<name>/
    hub: str | None = None
    hub_config: str | None = None
    hub_splits: dict[str, str] = field(default_factory=dict)  # our split -> the hub's split name
    instruction: str | None = None  # default instruction appended by render()
    few_shot_split: str | None = None  # where few-shot examples come from (None: no few-shot)
    task_ids: dict[str, tuple[int, int]] = field(default_factory=dict)  # split -> id range inside one file (MBPP)
    builtin: Callable[[str, Any], list[Problem]] | None = None  # generated sets (synthetic)

    def local_names(self, split: str) -> tuple[str, ...]:
        default = tuple(f"{split}{s}{gz}" for s in FILE_SUFFIXES for gz in ("", ".gz"))
        return self.files.get(split, ()) + default


DATASETS: Registry[NamedSet] = Registry("dataset")


def _add(ns: NamedSet) -> None:
    DATASETS.register(ns.name)(ns)


def _synthetic(split: str, cfg: Any) -> list[Problem]:
    n = cfg.synthetic_size if split == "train" else max(cfg.eval_size, 256)
    return make_problems(split, n=n, seed=cfg.seed, kinds=cfg.synthetic_kinds, style=cfg.synthetic_style)


_add(NamedSet("synthetic", "built-in arithmetic (add, sub, mul, linear, fraction), generated and seeded",
              ("train", "val", "test"), few_shot_split="train", builtin=_synthetic))
_add(NamedSet("gsm8k", "GSM8K grade-school math; answer after '####'", ("train", "test"),
              Schema("gsm8k", "question", "answer"), hub="openai/gsm8k", hub_config="main",
              instruction=BOXED, few_shot_split="train"))
_add(NamedSet("math", "MATH (Hendrycks); answer = last \\boxed{} of solution; test contains all of MATH-500",
              ("train", "test", "test_minus_math500"), Schema("boxed", "problem", "solution", "idx"),
              hub="DigitalLearningGmbH/MATH-lighteval", instruction=BOXED))
_add(NamedSet("math500", "MATH-500 (PRM800K test subset)", ("test",), Schema("plain", "problem", "answer", "unique_id"),
              hub="HuggingFaceH4/MATH-500", instruction=BOXED))
_add(NamedSet("aime24", "AIME 2024 I+II, 30 problems, integer answers 0-999", ("test",),
              Schema("plain", "problem", "answer", "id"), hub="HuggingFaceH4/aime_2024",
              hub_splits={"test": "train"}, instruction=BOXED))
_add(NamedSet("aime25", "AIME 2025 I+II, 30 problems, integer answers 0-999", ("test",),
              Schema("plain", "problem", "answer", "id"), hub="math-ai/aime25", instruction=BOXED))
_add(NamedSet("amc23", "AMC 12 2023, 40 problems, numeric answers such as 27.0", ("test",),
              None, hub="math-ai/amc23", instruction=BOXED))
_add(NamedSet("humaneval", "OpenAI HumanEval, 164 Python functions with unit tests", ("test",),
              Schema("humaneval", "prompt", "test", "task_id"), {"test": ("HumanEval.jsonl", "HumanEval.jsonl.gz")},
              hub="openai/openai_humaneval", instruction=HUMANEVAL))
_add(NamedSet("mbpp", "MBPP (full); test = task_id 11-510, prompt = 1-10, validation = 511-600, train = 601-974",
              ("train", "test", "validation", "prompt"), Schema("mbpp", "text", "test_list", "task_id"),
              {s: ("mbpp.jsonl",) for s in ("train", "test", "validation", "prompt")},
              hub="google-research-datasets/mbpp", hub_config="full", instruction=MBPP, few_shot_split="prompt",
              task_ids={"test": (11, 510), "prompt": (1, 10), "validation": (511, 600), "train": (601, 974)}))


def data_dirs(cfg: Any) -> list[Path]:
    """Local fallback directories, in order: ``data.data_dir``, then ``$REASONER_DATA_DIR``."""
    dirs = [getattr(cfg, "data_dir", None), os.environ.get("REASONER_DATA_DIR")]
    return [Path(d).expanduser() for d in dirs if d]


def find_local(ns: NamedSet, split: str, cfg: Any) -> Path | None:
    for d in data_dirs(cfg):
        for fname in ns.local_names(split):
            if (d / ns.name / fname).is_file():
                return d / ns.name / fname
    return None


def load_named(name: str, split: str, cfg: Any) -> Problems:
    ns = DATASETS.get(name)
    if split not in ns.splits:
        raise DataError(f"dataset {name!r} has no split {split!r}; its splits: {', '.join(ns.splits)}")
    if ns.builtin is not None:
        problems = Problems(ns.builtin(split, cfg))
    else:
        problems = _load_rows(ns, split, cfg)
    if getattr(cfg, "few_shot", 0) > 0:
        problems = Problems(attach_few_shot(problems, few_shot_examples(ns, cfg)), problems.skipped, problems.errors)
    return problems


def _load_rows(ns: NamedSet, split: str, cfg: Any) -> Problems:
    schema = with_schema_overrides(ns.schema, cfg.field_map) if ns.schema else None
    meta = {"instruction": ns.instruction} if ns.instruction else None
    opts = dict(schema=schema, field_map=cfg.field_map, skip_bad=cfg.skip_bad_rows, meta=meta)
    path = find_local(ns, split, cfg)
    if path is not None:
        lo_hi = ns.task_ids.get(split) if path.name.startswith(f"{ns.name}.") else None
        keep = (lambda r: lo_hi[0] <= int(r["task_id"]) <= lo_hi[1]) if lo_hi else None
        return build_problems(read_file(path), ns.name, keep=keep, **opts)
    if ns.hub is None:
        raise DataError(f"dataset {ns.name!r} split {split!r}: no local copy in {_where(ns, split, cfg)} and no hub id")
    offline = not hub_reachable()  # no network: use the HF cache only, at once, instead of ~30 s of retries
    try:
        if offline and not _go_offline():
            raise ConnectionError("the hub is unreachable (no network)")
        rows = list(read_hub(ns.hub, ns.hub_splits.get(split, split), ns.hub_config))
    except Exception as e:  # offline, no such split, datasets missing, ...
        why = "the hub is unreachable (offline) and the HF cache holds no copy" if offline else \
            f"loading {ns.hub!r} from the hub failed ({type(e).__name__}: {' '.join(str(e).split())[:200]})"
        raise DataError(f"dataset {ns.name!r} split {split!r}: no local copy in {_where(ns, split, cfg)}, and {why}. "
                        f"Set data.data_dir (--data-dir) or REASONER_DATA_DIR to a directory holding "
                        f"{ns.name}/{ns.local_names(split)[0]}") from None
    return build_problems(rows, ns.name, **opts)


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the hub's host answers a TCP connect within ``timeout`` (False when HF offline mode is set)."""
    import socket
    from urllib.parse import urlparse

    if any(os.environ.get(k, "") not in ("", "0") for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")):
        return False
    if any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True  # through a proxy: a direct connect says nothing; let the hub client try
    url = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout).close()
        return True
    except OSError:
        return False


def _go_offline() -> bool:
    """Put huggingface_hub and datasets in offline mode (they read it when first imported); False when
    they were imported already in online mode (a hub call would then retry for a long time)."""
    import sys

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    if "huggingface_hub" not in sys.modules:
        return True
    from huggingface_hub import constants

    return bool(getattr(constants, "HF_HUB_OFFLINE", False))


def _where(ns: NamedSet, split: str, cfg: Any) -> str:
    dirs = data_dirs(cfg)
    if not dirs:
        return "(no data.data_dir and no $REASONER_DATA_DIR set)"
    return ", ".join(str(d / ns.name / ns.local_names(split)[0]) for d in dirs)


# ---------------------------------------------------------------- few-shot examples

def demo_completion(p: Problem) -> str:
    """A worked completion for a few-shot example, ending in the set's answer format."""
    if p.tests and p.tests.get("format") == "mbpp" and p.meta.get("code"):
        return f"```python\n{p.meta['code'].strip()}\n```"
    raw = p.meta.get("solution") or p.meta.get("answer")
    if p.source == "gsm8k" and isinstance(raw, str) and "####" in raw:
        steps = raw.rsplit("####", 1)[0].strip()
        return f"{steps}\nThe final answer is \\boxed{{{gsm8k_answer(raw)}}}."
    if p.meta.get("instruction") and isinstance(raw, str) and "\\boxed" in raw:
        return raw.strip()
    if p.meta.get("instruction"):
        return f"The final answer is \\boxed{{{p.answer}}}."
    return str(p.answer)  # synthetic / bare sets: the bare answer


def few_shot_examples(ns: NamedSet, cfg: Any) -> list[tuple[str, str]]:
    if ns.few_shot_split is None:
        with_shots = [n for n in DATASETS.names() if DATASETS.get(n).few_shot_split]
        raise DataError(f"data.few_shot={cfg.few_shot}, but dataset {ns.name!r} has no few-shot source; "
                        f"sets with one: {', '.join(with_shots)}")
    source_cfg = dataclasses.replace(cfg, few_shot=0, synthetic_size=max(cfg.few_shot, 1))
    pool = load_named(ns.name, ns.few_shot_split, source_cfg)[: cfg.few_shot]
    return [(p.prompt if isinstance(p.prompt, str) else p.prompt[-1]["content"], demo_completion(p)) for p in pool]


def attach_few_shot(problems: list[Problem], shots: list[tuple[str, str]]) -> list[Problem]:
    """Each problem gets ``meta["few_shot"]``: (prompt, completion) pairs, never itself."""
    out = []
    for p in problems:
        own = [s for s in shots if s[0] != p.prompt]
        out.append(dataclasses.replace(p, meta={**p.meta, "few_shot": own}))
    return out
