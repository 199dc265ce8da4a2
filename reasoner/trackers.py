"""Experiment trackers behind the metrics log: ``run.report_to`` = tensorboard, wandb, trackio (or none).

``metrics.jsonl`` stays the run's record (a resume rebuilds everything from it); a tracker is a
sink that gets the same rows: every step's metrics (evaluation metrics on the steps that have
them), the config once, and the sample completions of ``run.log_samples_every`` (a W&B / trackio
Table, TensorBoard text). The kinds are a registry; each needs its optional extra
(``pip install 'reasoner[wandb]'``), checked when the config is validated, before any model loads.
Under torchrun only rank 0 has trackers. A resumed run continues the same W&B / trackio run (its id
is saved in ``run.out_dir/trackers.json``); TensorBoard appends, hiding the steps after the
checkpoint that the interrupted run had logged (``purge_step``).
"""
from __future__ import annotations

import importlib.util
import json
import math
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reasoner.config import ConfigError
from reasoner.registry import Registry

TRACKERS: Registry[type] = Registry("tracker")
IDS = "trackers.json"  # run.out_dir/trackers.json: the W&B id / trackio name a resume continues
SAMPLE_COLUMNS = ["step", "prompt", "completion", "reward", "verdict"]


@dataclass
class Context:
    """What a tracker opens with: the run directory, the resolved config, the project, the first step."""

    run_dir: Path
    config: dict[str, Any]
    project: str
    start: int  # 0 for a fresh run, else the resumed checkpoint's step

    def saved_id(self, kind: str) -> str | None:
        """The id a resumed run continues (None for a fresh run or when none was saved)."""
        path = self.run_dir / IDS
        if not self.start or not path.is_file():
            return None
        return json.loads(path.read_text()).get(kind)

    def save_id(self, kind: str, value: str) -> None:
        path = self.run_dir / IDS
        ids = json.loads(path.read_text()) if path.is_file() else {}
        path.write_text(json.dumps({**ids, kind: value}, indent=2))


def kinds(report_to: list[str]) -> list[str]:
    """The tracker names of ``run.report_to`` without ``none``."""
    return [k for k in report_to if k != "none"]


def check(report_to: list[str]) -> None:
    """ConfigError for an unknown tracker, ``none`` mixed with trackers, or a tracker whose extra is missing."""
    for name in report_to:
        if name != "none" and name not in TRACKERS:
            raise ConfigError(f"run.report_to: unknown tracker {name!r}; choose from: "
                              f"{', '.join(TRACKERS.names())}, none (e.g. run.report_to=tensorboard,wandb)")
    if "none" in report_to and kinds(report_to):
        raise ConfigError(f"run.report_to={','.join(report_to)}: 'none' cannot be combined with trackers; "
                          "drop it, or use run.report_to=none alone")
    for name in kinds(report_to):
        kind = TRACKERS.get(name)
        if importlib.util.find_spec(kind.module) is None:
            raise ConfigError(f"run.report_to={name} needs the optional extra {kind.extra!r}, which is not "
                              f"installed: pip install 'reasoner[{kind.extra}]' (or pip install {kind.extra}), "
                              "or drop it from run.report_to")


class Trackers:
    """The run's sinks, built once (``make``) and opened when the first step is known (``Run.begin``)."""

    def __init__(self, sinks: list, run_dir: Path | None = None, config: dict | None = None, project: str = ""):
        self.sinks, self.run_dir, self.config, self.project = sinks, run_dir, config or {}, project

    def open(self, start: int) -> None:
        ctx = Context(Path(self.run_dir), self.config, self.project, start) if self.sinks else None
        for s in self.sinks:
            s.open(ctx)

    def log(self, row: dict[str, Any]) -> None:
        """One step's metrics (numbers only; ``step`` is the x axis)."""
        if not self.sinks:
            return
        step, values = int(row["step"]), numbers(row)
        for s in self.sinks:
            s.log(step, values)

    def samples(self, step: int, records: list[dict]) -> None:
        """``metrics.log_samples`` records: one prompt with its completions each."""
        rows = sample_rows(records)
        for s in self.sinks:
            s.samples(step, rows)

    def close(self) -> None:
        for s in self.sinks:
            s.close()
        self.sinks = []


NO_TRACKERS = Trackers([])


def make(report_to: list[str], run_dir: Path, config: dict, project: str, main: bool = True) -> Trackers:
    """The build step's trackers: one sink per ``run.report_to`` kind on rank 0, none elsewhere."""
    if not main or not kinds(report_to):
        return Trackers([])
    return Trackers([TRACKERS.get(k)() for k in kinds(report_to)], run_dir, config, project)


def numbers(row: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in row.items() if k != "step" and isinstance(v, (int, float))}


def sample_rows(records: list[dict]) -> list[list]:
    """Table rows [step, prompt, completion, reward, verdict], one per completion."""
    return [[r["step"], r["prompt"], c["text"], float(c["reward"]), c["verdict"]]
            for r in records for c in r["completions"]]


def markdown_table(rows: list[list]) -> str:
    def cell(v: Any) -> str:
        return str(v).replace("|", "\\|").replace("\n", "<br>")
    lines = ["| " + " | ".join(SAMPLE_COLUMNS) + " |", "|" + "---|" * len(SAMPLE_COLUMNS)]
    return "\n".join(lines + ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows])


@TRACKERS.register("tensorboard")
class TensorBoard:
    """Event files in ``run.out_dir/tensorboard`` (``tensorboard --logdir run.out_dir``)."""

    extra = module = "tensorboard"

    def open(self, ctx: Context) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.w = SummaryWriter(str(ctx.run_dir / "tensorboard"), purge_step=ctx.start + 1 if ctx.start else None)
        if not ctx.start:
            self.w.add_text("config", "```\n" + json.dumps(ctx.config, indent=2, default=str) + "\n```", 0)

    def log(self, step: int, values: dict[str, float]) -> None:
        for k, v in values.items():
            self.w.add_scalar(k, v, step)
        self.w.flush()

    def samples(self, step: int, rows: list[list]) -> None:
        self.w.add_text("samples", markdown_table(rows), step)

    def close(self) -> None:
        self.w.close()


@TRACKERS.register("wandb")
class WandB:
    """A W&B run in ``run.out_dir/wandb`` (WANDB_MODE=offline: local files only; ``wandb sync`` later)."""

    extra = module = "wandb"

    def open(self, ctx: Context) -> None:
        import wandb

        run_id = ctx.saved_id("wandb") or uuid.uuid4().hex[:8]
        ctx.save_id("wandb", run_id)
        self.wandb = wandb
        self.run = wandb.init(project=ctx.project, name=ctx.run_dir.name, id=run_id, resume="allow",
                              dir=str(ctx.run_dir), config=ctx.config, settings=wandb.Settings(console="off"))

    def log(self, step: int, values: dict[str, float]) -> None:
        self.run.log(values, step=step)

    def samples(self, step: int, rows: list[list]) -> None:
        self.run.log({"samples": self.wandb.Table(columns=SAMPLE_COLUMNS, data=rows)}, step=step)

    def close(self) -> None:
        self.run.finish()


@TRACKERS.register("trackio")
class Trackio:
    """A trackio run (local: its SQLite store under $TRACKIO_DIR, ``trackio show`` to view)."""

    extra = module = "trackio"

    def open(self, ctx: Context) -> None:
        import trackio

        saved = ctx.saved_id("trackio")
        name = saved or f"{ctx.run_dir.name}-{time.strftime('%Y%m%d-%H%M%S')}"
        ctx.save_id("trackio", name)
        self.trackio = trackio
        self.run = trackio.init(project=ctx.project, name=name, config=ctx.config,
                                resume="allow" if saved else "never")

    def log(self, step: int, values: dict[str, float]) -> None:
        self.trackio.log({k: v for k, v in values.items() if math.isfinite(v)}, step=step)

    def samples(self, step: int, rows: list[list]) -> None:
        self.trackio.log({"samples": self.trackio.Table(columns=SAMPLE_COLUMNS, data=rows)}, step=step)

    def close(self) -> None:
        self.trackio.finish()
