"""``reasoner train [--config run.yaml] [key.sub=value ...]``"""
from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML file with sections model, data, sampling, algo, optim, run")
    p.add_argument("--resume", help="auto | a checkpoint directory (same as run.resume=...)")
    p.add_argument("overrides", nargs="*", metavar="key.sub=value", help="dotted overrides, e.g. run.steps=50")


def main(args: argparse.Namespace) -> int:
    from reasoner.config import load_config

    overrides = list(args.overrides) + ([f"run.resume={args.resume}"] if args.resume else [])
    cfg = load_config(args.config, overrides)  # fails on a bad key before any model is loaded
    from reasoner.trainer import train

    train(cfg)
    return 0
