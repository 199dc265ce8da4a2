"""The best evaluation of ``run.best_metric`` (``run.best_mode``: max | min) and early stopping after
``run.patience`` evaluations without a new best. Its state lives in the trainer state (resume-safe);
the run saves ``run.out_dir/best/`` when ``observe`` reports an improvement."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from reasoner.config import ConfigError


@dataclass
class Best:
    metric: str = ""  # "" = off: nothing is tracked, nothing is saved, no early stop
    mode: str = "max"
    patience: int = 0  # 0 = never stop early
    value: float | None = None
    step: int | None = None
    since: int = 0  # evaluations since the best one

    @classmethod
    def of(cls, r) -> "Best":
        """From ``run.best_metric`` / ``run.best_mode`` / ``run.patience``."""
        return cls(r.best_metric, r.best_mode, r.patience)

    def observe(self, step: int, metrics: dict[str, Any]) -> bool:
        """An evaluation at ``step``; True when it is a new best (the caller saves ``best/``)."""
        if not self.metric:
            return False
        if self.metric not in metrics:
            raise ConfigError(f"run.best_metric={self.metric!r} is not a metric of the evaluation; it reports: "
                              f"{', '.join(sorted(metrics))}")
        v = float(metrics[self.metric])
        better = not math.isnan(v) and (self.value is None or (v > self.value if self.mode == "max" else v < self.value))
        if better:
            self.value, self.step, self.since = v, step, 0
        else:
            self.since += 1
        return better

    @property
    def exhausted(self) -> bool:
        """True when ``patience`` evaluations in a row brought no new best: stop the run."""
        return bool(self.metric and self.patience and self.since >= self.patience)

    def state_dict(self) -> dict:
        return {"value": self.value, "step": self.step, "since": self.since}

    def load_state_dict(self, state: dict | None) -> None:
        state = state or {}
        self.value, self.step, self.since = state.get("value"), state.get("step"), state.get("since", 0)

    def summary(self) -> dict:
        return {"best_metric": self.metric or None, "best_mode": self.mode,
                "best_value": self.value, "best_step": self.step} if self.metric else {}


