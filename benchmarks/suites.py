"""Named benchmark suites -> problems, plus the evaluation protocol saved next to every score.

Every named dataset's held-out split is a suite of the same name (``aime24``, ``aime25``,
``amc23``, ``math500``, ``gsm8k``, ``math``, ``humaneval``, ``mbpp``, ``synthetic``). A suite
may also be written ``dataset:split`` or be a local file path.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reasoner.registry import Registry


@dataclass(frozen=True)
class Suite:
    name: str
    dataset: str  # a spec load_problems understands
    split: str
    description: str = ""


@dataclass
class Protocol:
    """Everything that changes a benchmark number; written into results.json."""

    n: int = 1  # samples per problem for avg@n / pass@k / maj@k
    temperature: float = 0.6
    top_p: float = 0.95
    max_new_tokens: int = 1024
    seeds: list[int] = field(default_factory=lambda: [0])
    k_list: list[int] | None = None  # None: 1, 2, 4, ..., n
    greedy: bool = True  # also measure greedy accuracy (n = 1, temperature 0)
    batch_size: int = 64  # completions per sampler call
    limit: int = 0  # > 0: only the first `limit` problems of each suite (smoke tests)
    template: str = "auto"
    instruction: str | None = None
    system_prompt: str | None = None
    few_shot: int = 0

    def validate(self) -> None:
        if self.n < 1 or self.max_new_tokens < 1 or self.batch_size < 1 or not self.seeds:
            raise ValueError(f"need n >= 1, max_new_tokens >= 1, batch_size >= 1 and at least one seed: {self}")
        if self.temperature < 0 or not 0 < self.top_p <= 1:
            raise ValueError(f"need temperature >= 0 and 0 < top_p <= 1, got {self.temperature}, {self.top_p}")
        bad = [k for k in self.k_list or [] if not 1 <= k <= self.n]
        if bad:
            raise ValueError(f"k values {bad} are outside 1..n={self.n}")


SUITES: Registry[Suite] = Registry("benchmark suite")


def _register_datasets() -> None:
    from reasoner.data import DATASETS

    for name in DATASETS.names():
        ds = DATASETS.get(name)
        split = "test" if "test" in ds.splits else ds.splits[-1]
        if name not in SUITES:
            SUITES.register(name)(Suite(name, name, split, ds.description))


_register_datasets()


def resolve_suite(spec: str) -> Suite:
    """``aime24`` | ``gsm8k:train`` | ``path/to/file.jsonl`` -> ``Suite``; unknown names list the valid ones."""
    if spec in SUITES:
        return SUITES.get(spec)
    name, _, split = spec.partition(":")
    if split and name in SUITES:
        return Suite(spec, SUITES.get(name).dataset, split)
    if Path(spec).expanduser().exists():
        return Suite(Path(spec).stem.split(".")[0], spec, "test")
    SUITES.get(spec)  # raises KeyError with the valid choices
    raise AssertionError("unreachable")


def load_suite(suite: Suite, data_cfg: Any, limit: int = 0) -> list:
    from reasoner.data import load_problems

    problems = load_problems(suite.dataset, suite.split, data_cfg)
    return list(problems[:limit]) if limit > 0 else list(problems)
