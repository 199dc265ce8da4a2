"""``reasoner train [--config run.yaml] [key.sub=value ...]``

A resume (``--resume auto`` finding a checkpoint, or ``--resume DIR``) starts from the run's saved
``config.yaml``; ``--config`` and the command-line overrides apply on top, and what they change is
printed on one line, so the README's ``reasoner train --resume auto run.out_dir=X`` continues run X
exactly as it was configured.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path


HELP = """\
overrides: section.key=value, before or after the options (later wins: defaults < algo.preset <
--config < overrides), e.g. run.steps=50 optim.lr=1e-4 algo.preset=dapo; a list as a,b or [a, b],
a dict as {key: value}, none for an unset optional value; a typo gets "did you mean".

every key, its default and what it does: reasoner config show; with --config FILE and overrides it
prints the resolved config, as YAML that --config reads back."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.formatter_class, p.epilog = argparse.RawDescriptionHelpFormatter, HELP
    p.add_argument("--config", help="YAML file with sections model, data, sampling, algo, optim, run (and eval)")
    p.add_argument("--resume", help="auto | a checkpoint directory (same as run.resume=...); a resume starts from "
                                    "the run's saved config.yaml, with --config and the overrides on top")
    p.add_argument("overrides", nargs="*", metavar="key.sub=value", help="dotted overrides, e.g. run.steps=50")


def saved_config(cfg) -> Path | None:
    """The config.yaml of the run that ``cfg.run.resume`` continues, or None (a fresh run)."""
    from reasoner import checkpoint

    ckpt = checkpoint.find_resume(Path(cfg.run.out_dir), cfg.run.resume)
    if ckpt is None:
        return None
    ckpt = Path(ckpt)
    dirs = ([ckpt.parent.parent] if ckpt.parent.name == "checkpoints" else []) + [Path(cfg.run.out_dir)]
    return next((d / "config.yaml" for d in dirs if (d / "config.yaml").is_file()), None)


def changes(old, new) -> list[str]:
    """``key: old -> new`` for every key whose value differs (run.resume left out)."""
    from reasoner.config import to_dict

    def flat(cfg) -> dict:
        return {f"{s}.{k}": v for s, sec in to_dict(cfg).items() for k, v in sec.items()}

    a, b = flat(old), flat(new)
    return [f"{k}: {a[k]!r} -> {b[k]!r}" for k in b if a.get(k) != b[k] and k != "run.resume"]


def resolve_config(config: str | None, overrides: list[str]):
    """The run's config: defaults <- --config <- overrides, or, on a resume, the saved config.yaml first."""
    from reasoner.config import ConfigError, load_config

    cfg = load_config(config, overrides)  # fails on a bad key before any model is loaded
    saved = saved_config(cfg)
    if saved is None:
        return cfg
    try:
        base = load_config(saved)
        resumed = load_config(config, overrides, base=saved)
    except ConfigError as e:
        raise ConfigError(f"{saved} (the saved config of the run being resumed): {e.args[0]}") from None
    diff = changes(base, resumed)
    if os.environ.get("RANK", "0") == "0":  # once under torchrun
        print(f"resuming with {saved}" + (f"; changed on the command line: {', '.join(diff)}" if diff else
                                           " (no setting changed)"))
    return resumed


def main(args: argparse.Namespace) -> int:
    overrides = list(args.overrides) + ([f"run.resume={args.resume}"] if args.resume else [])
    cfg = resolve_config(args.config, overrides)
    from reasoner.trainer import train

    train(cfg)
    return 0
