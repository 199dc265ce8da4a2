"""Run records: metrics.jsonl, training_metrics.csv, samples.jsonl, training_curves.png; the trackers
of ``run.report_to`` (``reasoner.trackers``) get the same rows."""
from __future__ import annotations

import contextlib
import csv
import json
import math
import time
from pathlib import Path
from typing import Any

from reasoner import writes
from reasoner.trackers import NO_TRACKERS, Trackers

CURVES = (("reward/mean", "reward"), ("eval/accuracy", "held-out accuracy (greedy)"),
          ("length/mean", "response length"), ("policy/entropy", "entropy"), ("loss/kl", "KL to reference"))


class Timer:
    """Seconds per named section of one step: ``with t("update"): ...``. ``t.charged(fetch, to)``
    wraps a blocking fetch (the reference's answer) so that its wait counts in ``to``, not in the
    section it happens in."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self._running: list[str] = []

    @contextlib.contextmanager
    def __call__(self, name: str):
        t0 = time.perf_counter()
        self._running.append(name)
        try:
            yield
        finally:
            self._running.pop()
            self.add(name, time.perf_counter() - t0)

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds

    def charged(self, fetch, to: str):
        def call():
            t0 = time.perf_counter()
            value = fetch()
            waited = time.perf_counter() - t0
            if self._running:
                self.add(self._running[-1], -waited)
            self.add(to, waited)
            return value
        return call


class MetricsLog:
    """Append-only step records; the CSV and the plot are rebuilt from them. ``sinks``: the trackers
    each new row also goes to (metrics.jsonl is the record a resume reads)."""

    def __init__(self, out_dir: str | Path, rows: list[dict[str, Any]] | None = None, sinks: Trackers = NO_TRACKERS):
        self.dir, self.sinks = Path(out_dir), sinks
        self.rows: list[dict[str, Any]] = list(rows or [])
        self._jsonl = self.dir / "metrics.jsonl"
        if not self.rows and self._jsonl.exists():
            self._jsonl.unlink()
        elif self.rows:  # resumed: rewrite so rows after the checkpoint disappear (the checkpoint holds them)
            writes.replace_text(self._jsonl, "".join(json.dumps(r) + "\n" for r in self.rows))

    def log(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        with writes.guard(self._jsonl), self._jsonl.open("a") as f:  # a full disk: one line; a resume rewrites it
            f.write(json.dumps(row) + "\n")
        self.sinks.log(row)

    def last(self, key: str, default: float = float("nan")) -> float:
        return next((r[key] for r in reversed(self.rows) if key in r), default)

    def write_csv(self) -> None:
        keys: list[str] = []
        for r in self.rows:
            keys.extend(k for k in r if k not in keys)
        path = self.dir / "training_metrics.csv"
        with writes.guard(path), path.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=keys)
            w.writeheader()
            w.writerows(self.rows)

    def plot(self) -> None:
        """training_curves.png: a panel per CURVES key, and one of accuracy per source when the run has several."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        panels = [(title, {"": _points(self.rows, key)}, key.startswith("eval/")) for key, title in CURVES]
        per_source = {label: _points(self.rows, key) for label, key in _per_source(self.rows, "accuracy")}
        if per_source:
            panels.append(("accuracy per source (training)", per_source, False))
        fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.2))
        for ax, (title, series, marker) in zip(axes, panels):
            for label, pts in series.items():
                if pts:
                    ax.plot(*zip(*pts), marker="o" if marker else None, markersize=3, label=label or None)
            if len(series) > 1:
                ax.legend(fontsize=8)
            ax.set_title(title, fontsize=10)
            ax.set_xlabel("step")
        fig.tight_layout()
        try:
            with writes.guard(self.dir / "training_curves.png"):
                fig.savefig(self.dir / "training_curves.png", dpi=90)
        finally:
            plt.close(fig)


def _points(rows: list[dict[str, Any]], key: str) -> list[tuple[int, float]]:
    """(step, value) of every row with a finite number under ``key``."""
    return [(r["step"], r[key]) for r in rows if isinstance(r.get(key), (int, float)) and not math.isnan(r[key])]


def _per_source(rows: list[dict[str, Any]], metric: str) -> list[tuple[str, str]]:
    """(label, key) of each ``source/<label>/<metric>`` column, in first-seen order (``reasoner.breakdown``)."""
    keys = dict.fromkeys(k for r in rows for k in r if k.startswith("source/") and k.endswith(f"/{metric}"))
    return [(k[len("source/"):-len(metric) - 1], k) for k in keys]


def log_samples(path: Path, step: int, prompts: list[str], texts: list[str], scores: list[float],
                statuses: list[str], group_size: int, max_problems: int = 2, details: list[str] | None = None
                ) -> list[dict]:
    """Append a few prompts with all their completions, rewards, verdicts and the verdicts' details
    (a crashing verifier's exception text); problems with an ``error`` verdict come first. Returns
    the records written (the trackers' sample tables)."""
    n = len(prompts)
    order = sorted(range(n), key=lambda i: not any(statuses[j] == "error"
                                                    for j in range(i * group_size, (i + 1) * group_size)))
    records = [{"step": step, "prompt": prompts[i],
                "completions": [{"text": texts[j], "reward": scores[j], "verdict": statuses[j],
                                 **({"detail": details[j]} if details is not None else {})}
                                for j in range(i * group_size, (i + 1) * group_size)]}
               for i in sorted(order[:max_problems])]
    with writes.guard(path), path.open("a") as f:
        f.write("".join(json.dumps(r) + "\n" for r in records))
    return records


def truncate_samples(path: Path, step: int) -> None:
    """Keep only the rows of steps <= ``step`` (a resume at ``step`` writes the later ones again)."""
    if not path.is_file():
        return
    keep = []
    for line in path.read_text().splitlines(keepends=True):
        try:
            if json.loads(line)["step"] <= step:
                keep.append(line)
        except (ValueError, KeyError, TypeError):
            continue  # a line cut short by a kill
    if keep:
        writes.replace_text(path, "".join(keep))  # never half of the rows that no checkpoint holds
    else:
        path.unlink()
