"""Experiment trackers behind the metrics log: ``run.report_to`` = tensorboard, wandb, trackio (or none).

``metrics.jsonl`` stays the run's record (a resume rebuilds everything from it); a tracker is a
sink that gets the same rows: every step's metrics (evaluation metrics on the steps that have
them), the config once, and the sample completions of ``run.log_samples_every`` (a W&B / trackio
Table, TensorBoard text). The kinds are a registry; each needs its optional extra
(``pip install 'reasoner[wandb]'``), checked when the config is validated, before any model loads.
Under torchrun only rank 0 has trackers. A resumed run continues the same W&B / trackio run (its id
is saved in ``run.out_dir/trackers.json``, with the last step each of them got): their APIs keep every
row they were sent, so the steps the interrupted run logged after its checkpoint are not sent again
(a resume reproduces them; with settings changed on the resume the tracker keeps the interrupted run's
values for those steps, metrics.jsonl the new ones). TensorBoard gets them again, hiding the
interrupted run's events after the checkpoint (``purge_step``). A tracker that cannot write (a full
disk) stops the run with one line naming its directory (``reasoner.writes``).
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

from reasoner import writes
from reasoner.config import ConfigError
from reasoner.registry import Registry

TRACKERS: Registry[type] = Registry("tracker")
IDS = "trackers.json"  # run.out_dir/trackers.json: the W&B id / trackio name a resume continues, "logged" steps
LOGGED = "logged"  # trackers.json key: {tracker: the last step whose metrics it got}
SAMPLE_COLUMNS = ["step", "prompt", "completion", "reward", "verdict"]


@dataclass
class Context:
    """What a tracker opens with: the run directory, the resolved config, the project, the first step."""

    run_dir: Path
    config: dict[str, Any]
    project: str
    start: int  # 0 for a fresh run, else the resumed checkpoint's step

    def _state(self) -> dict[str, Any]:
        path = self.run_dir / IDS
        return json.loads(path.read_text()) if path.is_file() else {}

    def saved_id(self, kind: str) -> str | None:
        """The id a resumed run continues (None for a fresh run or when none was saved)."""
        return self._state().get(kind) if self.start else None

    def logged(self, kind: str) -> int:
        """The last step a resumed run's tracker ``kind`` already has (-1: none, or a fresh run)."""
        return int(self._state().get(LOGGED, {}).get(kind, -1)) if self.start else -1

    def save(self, kind: str, value: Any) -> None:
        """Set one key of trackers.json (replaced atomically: a kill or a full disk never leaves half)."""
        writes.replace_text(self.run_dir / IDS, json.dumps({**self._state(), kind: value}, indent=2))


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
    """The run's sinks, built once (``make``) and opened when the first step is known (``Run.begin``).

    A sink with ``append_only = True`` (W&B, trackio: no API drops rows already sent) gets no step it
    already has after a resume (the last step it got is kept in trackers.json under ``name``)."""

    def __init__(self, sinks: list, run_dir: Path | None = None, config: dict | None = None, project: str = ""):
        self.sinks, self.run_dir, self.config, self.project = sinks, run_dir, config or {}, project
        self.ctx: Context | None = None
        self.skip: dict[str, int] = {}  # append-only sink name -> steps up to this one it already has

    def open(self, start: int) -> None:
        self.ctx = Context(Path(self.run_dir), self.config, self.project, start) if self.sinks else None
        for s in self.sinks:
            self._call(s, "open", self.ctx)
        self.skip = {_name(s): self.ctx.logged(_name(s)) for s in self.sinks if getattr(s, "append_only", False)}

    def _new(self, s, step: int) -> bool:
        return step > self.skip.get(_name(s), -1)

    def log(self, row: dict[str, Any]) -> None:
        """One step's metrics (numbers only; ``step`` is the x axis)."""
        if not self.sinks:
            return
        step, values = int(row["step"]), numbers(row)
        for s in self.sinks:
            if self._new(s, step):
                self._call(s, "log", step, values)
        if self.skip:
            self.ctx.save(LOGGED, {name: max(step, last) for name, last in self.skip.items()})

    def samples(self, step: int, records: list[dict]) -> None:
        """``metrics.log_samples`` records: one prompt with its completions each."""
        rows = sample_rows(records)
        for s in self.sinks:
            if self._new(s, step):
                self._call(s, "samples", step, rows)

    def close(self) -> None:
        for s in self.sinks:
            self._call(s, "close")
        self.sinks = []

    def _call(self, sink, method: str, *args) -> None:
        """``sink.method(*args)``; a write that fails (a full disk, any OSError) is one line naming its files."""
        try:
            getattr(sink, method)(*args)
        except Exception as e:
            where = Path(getattr(sink, "path", None) or self.run_dir)
            if isinstance(e, OSError) or writes.is_full(e, where):
                raise writes.write_error(where, e, f"the {_name(sink)} tracker's files in ") from e
            raise


def _name(sink) -> str:
    """A sink's tracker name (its ``run.report_to`` kind): the key of its state in trackers.json."""
    return getattr(sink, "name", type(sink).__name__)


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

    extra = module = name = "tensorboard"
    append_only = False  # a resume hides the interrupted run's events after the checkpoint (purge_step)

    def open(self, ctx: Context) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.path = ctx.run_dir / "tensorboard"
        self.w = SummaryWriter(str(self.path), purge_step=ctx.start + 1 if ctx.start else None)
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

    extra = module = name = "wandb"
    append_only = True

    def open(self, ctx: Context) -> None:
        import wandb

        self.path = ctx.run_dir / "wandb"
        run_id = ctx.saved_id(self.name) or uuid.uuid4().hex[:8]
        ctx.save(self.name, run_id)
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

    extra = module = name = "trackio"
    append_only = True

    def open(self, ctx: Context) -> None:
        import trackio
        import trackio.utils

        self.path = trackio.utils.TRACKIO_DIR
        saved = ctx.saved_id(self.name)
        name = saved or f"{ctx.run_dir.name}-{time.strftime('%Y%m%d-%H%M%S')}"
        ctx.save(self.name, name)
        self.trackio = trackio
        self.run = trackio.init(project=ctx.project, name=name, config=ctx.config,
                                resume="allow" if saved else "never")

    def log(self, step: int, values: dict[str, float]) -> None:
        self.trackio.log({k: v for k, v in values.items() if math.isfinite(v)}, step=step)

    def samples(self, step: int, rows: list[list]) -> None:
        self.trackio.log({"samples": self.trackio.Table(columns=SAMPLE_COLUMNS, data=rows)}, step=step)

    def close(self) -> None:
        self.trackio.finish()
