"""``reasoner config show [--config run.yaml] [key.sub=value ...]``

Prints the resolved config (defaults <- preset <- --config <- overrides, validated) as YAML, each key
followed by its comment; the output is a file ``reasoner train --config`` and ``reasoner eval --config``
read back.
"""
from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=("show",), help="show: print every key, its value and what it does")
    p.add_argument("--config", help="YAML file with sections model, data, sampling, algo, optim, run, eval")
    p.add_argument("overrides", nargs="*", metavar="key.sub=value", help="dotted overrides, e.g. run.steps=50")


def main(args: argparse.Namespace) -> int:
    from reasoner.config import load_config
    from reasoner.config_doc import render

    print(render(load_config(args.config, args.overrides)), end="")
    return 0
