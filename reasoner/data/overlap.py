"""Contamination check: which evaluation problems appear in a training set.

Texts are normalised (lower case, words only: ``re.findall(r"\\w+")``, plus arithmetic
operators for the exact comparison) so spacing, punctuation and LaTeX markup do not hide a copy. An evaluation problem is flagged
``exact`` when its normalised text equals a training problem's, and ``ngram`` when it
has at least ``min_coverage`` (default 50 %) of its words inside runs of ``n`` consecutive
words (13 by default, as in the GPT-3 contamination study) that also occur in the training
set. The coverage threshold keeps boilerplate such as "where m and n are relatively prime
positive integers. Find m+n" from flagging every AIME problem. Problems shorter than ``n``
words are checked only for an exact match.
"""
from __future__ import annotations

import re
import warnings
from collections import Counter
from dataclasses import asdict, dataclass, field

from reasoner.types import Problem


@dataclass(frozen=True)
class Hit:
    eval_id: str
    train_id: str
    kind: str  # "exact" | "ngram"
    coverage: float  # share of the evaluation problem's words inside shared n-grams (1.0 for exact)
    shared: str  # the shared n-gram (or the start of the exact text)


@dataclass
class OverlapReport:
    n: int
    min_coverage: float
    train_size: int
    eval_sizes: dict[str, int]
    hits: dict[str, list[Hit]] = field(default_factory=dict)  # eval set -> one hit per contaminated problem

    def count(self, name: str) -> int:
        return len(self.hits.get(name, []))

    @property
    def any(self) -> bool:
        return any(self.hits.values())

    def summary(self) -> str:
        lines = [f"train problems: {self.train_size}; n-gram length {self.n}, "
                 f"flagged when >= {self.min_coverage:.0%} of a problem's words are in shared n-grams"]
        for name, size in self.eval_sizes.items():
            hits = self.hits.get(name, [])
            exact = sum(h.kind == "exact" for h in hits)
            pct = 100.0 * len(hits) / size if size else 0.0
            lines.append(f"{name}: {len(hits)}/{size} problems overlap ({pct:.1f}%; {exact} exact, "
                         f"{len(hits) - exact} by {self.n}-gram)")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"n": self.n, "min_coverage": self.min_coverage, "train_size": self.train_size, "eval_sizes": self.eval_sizes,
                "hits": {k: [asdict(h) for h in v] for k, v in self.hits.items()}}


def problem_text(p: Problem) -> str:
    return p.prompt if isinstance(p.prompt, str) else "\n".join(m["content"] for m in p.prompt)


def words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def exact_key(text: str) -> str:
    """Words plus arithmetic operators: ``47+35=`` and ``47-35=`` are different problems."""
    return " ".join(re.findall(r"\w+|[-+*/=^<>]", text.lower()))


def ngrams(tokens: list[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)}


def _index(train: list[Problem], n: int) -> tuple[dict[str, str], dict[tuple[str, ...], str]]:
    exact: dict[str, str] = {}
    grams: dict[tuple[str, ...], str] = {}
    for p in train:
        text = problem_text(p)
        toks = words(text)
        exact.setdefault(exact_key(text), p.id)
        for g in ngrams(toks, n):
            grams.setdefault(g, p.id)
    return exact, grams


def _hit(p: Problem, n: int, min_coverage: float, exact: dict[str, str],
         grams: dict[tuple[str, ...], str]) -> Hit | None:
    text = problem_text(p)
    toks, key = words(text), exact_key(text)
    if key in exact:
        return Hit(p.id, exact[key], "exact", 1.0, key[:80])
    covered = [False] * len(toks)
    owners: Counter[str] = Counter()
    first = ""
    for i in range(len(toks) - n + 1):
        g = tuple(toks[i:i + n])
        if g in grams:
            covered[i:i + n] = [True] * n
            owners[grams[g]] += 1
            first = first or " ".join(g)
    coverage = sum(covered) / len(toks) if toks else 0.0
    if owners and coverage >= min_coverage:
        return Hit(p.id, owners.most_common(1)[0][0], "ngram", round(coverage, 3), first)
    return None


def find_overlap(train: list[Problem], evals: dict[str, list[Problem]], n: int = 13,
                 min_coverage: float = 0.5) -> OverlapReport:
    """One ``Hit`` per evaluation problem found in ``train``: exactly, or with at least
    ``min_coverage`` of its words inside n-grams that also occur in training problems."""
    if n < 1 or not 0.0 < min_coverage <= 1.0:
        raise ValueError(f"need n >= 1 and 0 < min_coverage <= 1, got n={n}, min_coverage={min_coverage}")
    exact, grams = _index(train, n)
    report = OverlapReport(n, min_coverage, len(train), {k: len(v) for k, v in evals.items()})
    for name, problems in evals.items():
        report.hits[name] = [h for p in problems if (h := _hit(p, n, min_coverage, exact, grams)) is not None]
    return report


def warn_overlap(train: list[Problem], evals: dict[str, list[Problem]], n: int = 13,
                 min_coverage: float = 0.5) -> OverlapReport:
    """``find_overlap`` plus a ``UserWarning`` when any evaluation problem is in the training set
    (what the trainer calls at start)."""
    report = find_overlap(train, evals, n, min_coverage)
    if report.any:
        warnings.warn("training set overlaps the evaluation set(s):\n" + report.summary(), stacklevel=2)
    return report
