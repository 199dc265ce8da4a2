"""``reasoner data overlap TRAIN EVAL...`` and ``reasoner data show SPEC``.

``overlap`` reports evaluation problems that appear in the training set, exactly or by a
long shared n-gram (see ``reasoner.data.overlap``); it exits 1 when any is found, so CI can
gate on it. ``show`` loads a set and prints its size, fields and first problems.
"""
from __future__ import annotations

import argparse
import json
import sys


def _spec(text: str) -> tuple[str, str | None]:
    """``gsm8k:train`` -> ("gsm8k", "train") when the part before ':' is a named set or a file."""
    from pathlib import Path

    from reasoner.data import DATASETS

    name, sep, split = text.rpartition(":")
    if sep and (name in DATASETS or Path(name).expanduser().exists()):
        return name, split
    return text, None


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", default=None, help="local copies of named sets (else $REASONER_DATA_DIR, else hub)")
    p.add_argument("--skip-bad-rows", action="store_true")
    sub = p.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)
    o = sub.add_parser("overlap", help="contamination check: which EVAL problems appear in TRAIN")
    o.add_argument("train", help="a named set, file or hub id; NAME:SPLIT picks a split (default train)")
    o.add_argument("evals", nargs="+", help="evaluation sets; NAME:SPLIT picks a split (default test)")
    o.add_argument("--n", type=int, default=13, help="n-gram length in words")
    o.add_argument("--min-coverage", type=float, default=0.5,
                   help="flag a problem when this share of its words lies in shared n-grams")
    o.add_argument("--json", default=None, help="also write the full report (every hit) to this file")
    o.add_argument("--show", type=int, default=5, help="hits printed per evaluation set")
    s = sub.add_parser("show", help="load a set and print its size and first problems")
    s.add_argument("spec", help="a named set, file or hub id; NAME:SPLIT picks a split (default test)")
    s.add_argument("--head", type=int, default=2)


def _load(text: str, default_split: str, args: argparse.Namespace):
    from reasoner.config import DataConfig
    from reasoner.data import load_problems

    spec, split = _spec(text)
    problems = load_problems(spec, split or default_split, DataConfig(data_dir=args.data_dir,
                                                                      skip_bad_rows=args.skip_bad_rows))
    if getattr(problems, "skipped", 0):
        print(f"{text}: skipped {problems.skipped} malformed row(s)")
    return problems


def _overlap(args: argparse.Namespace) -> int:
    from reasoner.data.overlap import find_overlap

    train = _load(args.train, "train", args)
    evals = {e: _load(e, "test", args) for e in args.evals}
    report = find_overlap(train, evals, n=args.n, min_coverage=args.min_coverage)
    print(report.summary())
    for name, hits in report.hits.items():
        for h in hits[: args.show]:
            print(f"  {name}: {h.eval_id} ~ {h.train_id} ({h.kind}, {h.coverage:.0%}): \"{h.shared}\"")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(report.to_dict(), f, indent=2)
    return 1 if report.any else 0


def _show(args: argparse.Namespace) -> int:
    problems = _load(args.spec, "test", args)
    print(f"{args.spec}: {len(problems)} problems")
    for p in problems[: args.head]:
        prompt = p.prompt if isinstance(p.prompt, str) else json.dumps(p.prompt)
        print(f"- id={p.id} verifier={p.verifier} answer={p.answer!r} tests={sorted(p.tests) if p.tests else None}")
        print("  " + prompt[:300].replace("\n", "\n  "))
    return 0


def main(args: argparse.Namespace) -> int:
    from reasoner.data import DataError

    try:
        return {"overlap": _overlap, "show": _show}[args.data_command](args)
    except (DataError, KeyError) as e:
        print(f"reasoner data: error: {e.args[0] if e.args else e}", file=sys.stderr)
        return 2
