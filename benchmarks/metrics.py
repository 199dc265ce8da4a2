"""PURE estimators for n samples per problem: ``pass_at_k``, ``maj_at_k``, ``avg_at_n``.

All three are expectations over the C(n, k) ways to pick k of the n samples, so they use
every sample (no "first k" bias) and are exact, not Monte Carlo.

- ``pass_at_k(n, c, k) = 1 - C(n-c, k) / C(n, k)`` (Chen et al. 2021, the Codex paper),
  computed as a product ``1 - prod_{i=n-c+1..n} (1 - k/i)`` so no factorial overflows.
- ``maj_at_k``: in a k-subset, answers are grouped into classes of mathematically equivalent
  answers (``equivalent``); the largest class wins and the subset scores that class's
  correctness. **Ties**: when several classes share the largest count, each wins with equal
  probability (uniform random tie-break), so a tie between a right and a wrong answer scores
  1/2. **No answer** (``None``, nothing extracted) is an abstention: it takes a place in the
  subset but never wins; a subset of only abstentions scores 0.
- ``avg_at_n``: the mean of the per-sample correctness (c / n), i.e. ``pass@1``.
"""
from __future__ import annotations

import math
import re
from fractions import Fraction
from typing import Any, Callable, Sequence

import numpy as np

Equivalent = Callable[[str, str], bool]


def _check(n: int, k: int) -> None:
    if not (isinstance(n, int) and isinstance(k, int)) or n < 1 or not 1 <= k <= n:
        raise ValueError(f"need integers 1 <= k <= n, got n={n}, k={k}")


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c are correct."""
    _check(n, k)
    if not 0 <= c <= n:
        raise ValueError(f"need 0 <= c <= n, got c={c}, n={n}")
    if n - c < k:
        return 1.0
    return 1.0 - float(np.prod(1.0 - k / np.arange(n - c + 1, n + 1, dtype=np.float64)))


def avg_at_n(correct: Sequence[bool | float]) -> float:
    """Mean correctness of the n samples of one problem (avg@n = pass@1)."""
    if len(correct) == 0:
        raise ValueError("avg@n of zero samples")
    return float(np.mean(np.asarray(correct, dtype=np.float64)))


def string_equivalent(a: str, b: str) -> bool:
    return a.strip() == b.strip()


def default_equivalent() -> Equivalent:
    """``verifiers.math.equivalent`` when it is installed, else exact (stripped) string equality."""
    try:
        from reasoner.verifiers.math import equivalent
    except ImportError:
        return string_equivalent
    return equivalent


def answer_classes(answers: Sequence[str | None], correct: Sequence[bool | float],
                   equivalent: Equivalent | None = None) -> tuple[list[tuple[int, float]], int]:
    """Group answers by equivalence: ([(class size, mean correctness of its members)], #None).

    Identical strings are merged first, then plain numbers of equal exact value (``27`` and
    ``27.0``, ``1/2`` and ``0.5``); ``equivalent`` then runs on pairs of the remaining distinct
    strings, except pairs of two plain numbers, whose values already differ (greedy: each
    string joins the first class whose representative it matches).
    """
    if len(answers) != len(correct):
        raise ValueError(f"{len(answers)} answers but {len(correct)} correctness flags")
    eq = equivalent or default_equivalent()
    by_text: dict[Any, list[int]] = {}
    for i, a in enumerate(answers):
        if a is not None:
            num = _number(a)
            by_text.setdefault(a.strip() if num is None else num, []).append(i)
    reps: list[Any] = []
    members: list[list[int]] = []
    for key, idx in by_text.items():
        text = answers[idx[0]].strip()  # type: ignore[union-attr]
        j = next((j for j, r in enumerate(reps) if not (isinstance(key, Fraction) and isinstance(r[0], Fraction))
                  and _safe_eq(eq, text, r[1])), None)
        if j is None:
            reps.append((key, text))
            members.append(list(idx))
        else:
            members[j].extend(idx)
    classes = [(len(m), float(np.mean([float(correct[i]) for i in m]))) for m in members]
    return classes, sum(a is None for a in answers)


def _number(text: str) -> Fraction | None:
    """The exact value of a plain number (``-3``, ``27.0``, ``1/2``, ``1,000``), else None."""
    t = text.strip().replace(",", "")
    if not re.fullmatch(r"[-+]?(\d+(\.\d*)?|\.\d+)(/\d+)?", t):
        return None
    try:
        return Fraction(t)
    except (ValueError, ZeroDivisionError):
        return None


def _safe_eq(eq: Equivalent, a: str, b: str) -> bool:
    try:
        return bool(eq(a, b))
    except Exception:  # an answer the checker cannot parse is simply not equivalent
        return False


def maj_at_k_classes(classes: Sequence[tuple[int, float]], n_none: int, k: int) -> float:
    """maj@k from answer classes [(size, correctness)] and the number of abstentions."""
    n = sum(m for m, _ in classes) + n_none
    _check(n, k)
    total = 0.0
    for a, (m_a, score_a) in enumerate(classes):
        if score_a > 0:
            others = [m for j, (m, _) in enumerate(classes) if j != a]
            total += score_a * _win_weight(m_a, others, n_none, k)
    return total / math.comb(n, k)


def _win_weight(m_a: int, others: list[int], n_none: int, k: int) -> float:
    """Sum over k-subsets of P(class a wins) (ties split evenly), times C(n, k)."""
    weight = 0.0
    for v in range(1, min(m_a, k) + 1):  # v = members of class a drawn
        r = k - v  # places left for the other classes and abstentions
        contenders = [m for m in others if m >= v]  # only these can reach v and tie
        free = n_none + sum(m for m in others if m < v)  # never reach v: drawn freely (Vandermonde)
        dp = np.zeros((len(contenders) + 1, r + 1))  # dp[t, s]: ways, t contenders tied at v, s drawn
        dp[0, 0] = 1.0
        for m in contenders:
            new = np.zeros_like(dp)
            for x in range(0, min(v, r) + 1):
                if x < v:
                    new[:, x:] += math.comb(m, x) * dp[:, : r + 1 - x]
                else:
                    new[1:, x:] += math.comb(m, x) * dp[:-1, : r + 1 - x]
            dp = new
        fill = np.array([math.comb(free, r - s) for s in range(r + 1)], dtype=np.float64)
        ties = dp @ fill  # [t]: ways with t contenders tied
        weight += math.comb(m_a, v) * float(ties @ (1.0 / np.arange(1, len(ties) + 1)))
    return weight


def maj_at_k(answers: Sequence[str | None], correct: Sequence[bool | float], k: int,
             equivalent: Equivalent | None = None) -> float:
    """Expected majority-vote correctness over all k-subsets of the n samples (see module doc)."""
    classes, n_none = answer_classes(answers, correct, equivalent)
    return maj_at_k_classes(classes, n_none, k)


def default_k_list(n: int) -> list[int]:
    """1, 2, 4, ... up to n, and n itself."""
    ks = [1 << i for i in range(n.bit_length()) if (1 << i) <= n]
    return ks if ks[-1] == n else ks + [n]


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; 0.0 for a single value)."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.size == 0:
        raise ValueError("mean of no values")
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else 0.0
