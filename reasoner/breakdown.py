"""Step metrics per training source and per verifier: ``source/<label>/...`` and ``verifier/<name>/...``.

A run whose training set has several sources (``data.train`` as a weighted list,
``reasoner.data.mixture``) gets, for each source S in every step row: ``source/S/count`` (its
problems in the step's batch, 0 included), and when it has any ``source/S/reward`` (mean verifier
score), ``/accuracy`` (share of ``correct`` verdicts), ``/verdict/<status>`` (share of each
status), ``/length`` (mean completion tokens), ``/zero_var_groups`` (share of its groups whose
scores are all equal). A training set with several verifiers gets the same under
``verifier/V/...``. One source and one verifier (the default run): no columns, rows unchanged.
A metric is absent (not NaN) on a step without that source, so that under torchrun it is reduced
over the ranks that had it: counts add up, the others are the mean of those ranks' values
(``distributed.reduce_metrics``; unweighted by each rank's count).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from reasoner import verifiers
from reasoner.advantages import frac_zero_std_groups
from reasoner.types import Problem


@dataclass(frozen=True)
class Breakdown:
    """Which per-group columns a run's step rows get (built once, ``Breakdown.of``)."""

    sources: tuple[str, ...] = ()  # source labels, when the training set has several
    verifiers: tuple[str, ...] = ()  # verifier names, when the training set has several

    @classmethod
    def of(cls, labels: Sequence[str], problems: Sequence[Problem]) -> "Breakdown":
        """``labels``: the sources of ``data.train`` in order; ``problems``: the training set."""
        names = sorted({p.verifier for p in problems})
        return cls(tuple(labels) if len(labels) > 1 else (), tuple(names) if len(names) > 1 else ())

    def row(self, problems: Sequence[Problem], verdicts: Sequence, scores: torch.Tensor,
            lengths: torch.Tensor) -> dict[str, float]:
        """The columns for one step: ``problems`` [B], ``verdicts`` [N], ``scores`` [B, G] verifier
        scores, ``lengths`` [N] completion tokens (rows group-major)."""
        out: dict[str, float] = {}
        parts: tuple[tuple[str, tuple[str, ...], Callable[[Problem], str]], ...] = (
            ("source", self.sources, lambda p: p.source), ("verifier", self.verifiers, lambda p: p.verifier))
        for prefix, names, tag in parts:
            for name in names:
                groups = [i for i, p in enumerate(problems) if tag(p) == name]
                out.update(columns(f"{prefix}/{name}", groups, verdicts, scores, lengths))
        return out


def columns(prefix: str, groups: list[int], verdicts: Sequence, scores: torch.Tensor,
            lengths: torch.Tensor) -> dict[str, float]:
    """The metrics of the groups ``groups`` (indices into the B problems) under ``prefix``."""
    out = {f"{prefix}/count": float(len(groups))}
    if not groups:
        return out
    G = scores.shape[1]
    rows = [g * G + j for g in groups for j in range(G)]
    statuses = [verdicts[i].status for i in rows]
    mine = scores[torch.tensor(groups)]  # [b, G]
    out[f"{prefix}/reward"] = float(mine.mean())
    out[f"{prefix}/accuracy"] = statuses.count("correct") / len(rows)
    for s in verifiers.STATUSES:
        out[f"{prefix}/verdict/{s}"] = statuses.count(s) / len(rows)
    out[f"{prefix}/length"] = float(lengths[torch.tensor(rows)].float().mean())
    out[f"{prefix}/zero_var_groups"] = frac_zero_std_groups(mine)
    return out


NO_BREAKDOWN = Breakdown()  # one source, one verifier: no extra columns
