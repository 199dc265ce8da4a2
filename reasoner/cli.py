"""``reasoner train | eval | verify | list | data``"""
from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = {"train": "train a policy (defaults: the embedded tiny model on built-in arithmetic)",
            "eval": "evaluate a model on benchmark suites", "verify": "check answers with a verifier",
            "list": "print every registry (verifiers, estimators, presets, datasets)",
            "data": "dataset tools (overlap / contamination check)"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="reasoner", description="RL from verifiable rewards for reasoning models")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, help_ in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        module = importlib.import_module(f"reasoner.commands.{name}")
        module.add_arguments(p)
        p.set_defaults(_main=module.main)
    return parser


def main(argv: list[str] | None = None) -> int:
    from reasoner.config import ConfigError

    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv or ["train"])
    if not getattr(args, "_main", None):
        args = build_parser().parse_args(["train", *argv])
    try:
        return args._main(args)
    except ConfigError as e:
        msg = e.args[0] if e.args else str(e)
        print(f"reasoner: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
