"""``reasoner verify``: check one answer, or find where checkers disagree on a whole dataset.

    reasoner verify --verifier math --gold '\\frac12' --response '... \\boxed{0.5}'
    reasoner verify --dataset cases.jsonl          # jsonl with gold + response fields
    reasoner verify --dataset "$REASONER_DATA_DIR/math500/test.jsonl"   # answer vs solution
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

GOLD_FIELDS = ("gold", "answer", "expected_answer", "reference")
RESPONSE_FIELDS = ("response", "completion", "output", "solution", "generation")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--verifier", default="math", help="verifier name (see `reasoner list`)")
    p.add_argument("--plugins", default="", help="comma-separated modules or .py files that register verifiers")
    p.add_argument("--gold", help="gold answer, or a whole reference solution")
    p.add_argument("--response", help="model response to check (use '-' to read stdin)")
    p.add_argument("--fallback", default="last_number", choices=("last_number", "none"),
                   help="what to extract when the response has no \\boxed{} or 'answer is'")
    p.add_argument("--timeout", type=float, default=2.0, help="seconds per symbolic comparison")
    p.add_argument("--dataset", help="jsonl file: report where exact match, math-verify and ours disagree")
    p.add_argument("--limit", type=int, default=0, help="only the first N rows of --dataset")
    p.add_argument("--show", type=int, default=20, help="disagreeing rows to print")
    p.add_argument("--json", action="store_true", help="print the verdict as JSON")


def _pick(row: dict, fields: tuple[str, ...], what: str, path: str):
    for f in fields:
        if f in row and row[f] is not None:
            return row[f]
    raise ValueError(f"{path}: the row has none of the {what} fields {', '.join(fields)} (rename one of its fields)")


def load_pairs(path: str, limit: int = 0) -> list[tuple[str, str]]:
    """(response, gold) pairs from a jsonl file; gold/response fields are looked up by name."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"--dataset {path}: no such file")
    pairs = []
    with p.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{n}: not JSON ({e.msg} at column {e.colno})") from None
            pairs.append((str(_pick(row, RESPONSE_FIELDS, "response", f"{path}:{n}")),
                          _pick(row, GOLD_FIELDS, "gold", f"{path}:{n}")))
            if limit and len(pairs) >= limit:
                break
    return pairs


def _one(args: argparse.Namespace) -> int:
    if args.gold is None or args.response is None:
        print("reasoner verify: give --gold and --response, or --dataset FILE", file=sys.stderr)
        return 2
    response = sys.stdin.read() if args.response == "-" else args.response
    if args.verifier == "math":
        from reasoner.verifiers.math import check

        v = check(response, args.gold, fallback=args.fallback, timeout=args.timeout)
    else:
        from reasoner import verifiers
        from reasoner.types import Problem

        fn = verifiers.get(args.verifier)
        v = fn(response, Problem(id="cli", prompt="", answer=args.gold, verifier=args.verifier))
    if args.json:
        print(json.dumps(v._asdict()))
    else:
        print(f"{v.status} (score {v.score:g}); answer: {v.answer!r}; {v.detail}")
    return 0


def _dataset(args: argparse.Namespace) -> int:
    from reasoner.verifiers.math import check_batch
    from reasoner.verifiers.math.baselines import BASELINES, run_safely

    pairs = load_pairs(args.dataset, args.limit)
    ours = check_batch([r for r, _ in pairs], [g for _, g in pairs], fallback=args.fallback, timeout=args.timeout)
    base = {name: [run_safely(fn, r, str(g)) for r, g in pairs] for name, fn in BASELINES.items()}
    print(f"{len(pairs)} rows from {args.dataset}")
    print("ours: " + ", ".join(f"{k} {c}" for k, c in sorted(Counter(v.status for v in ours).items())))
    for name, res in base.items():
        print(f"{name}: correct {sum(res)}")
    shown = 0
    disagree = 0
    for i, (r, g) in enumerate(pairs):
        votes = {name: res[i] for name, res in base.items()}
        mine = ours[i].status == "correct"
        if len(set(votes.values()) | {mine}) > 1:
            disagree += 1
            if shown < args.show:
                shown += 1
                others = " ".join(f"{k}={'Y' if v else 'n'}" for k, v in votes.items())
                print(f"- row {i + 1}: ours={ours[i].status} ({ours[i].detail}) {others}\n"
                      f"    gold={str(g)[:80]!r} answer={(ours[i].answer or '')[:80]!r}")
    print(f"rows where the checkers disagree: {disagree} of {len(pairs)}")
    return 0


def _check_verifier(args: argparse.Namespace) -> None:
    from reasoner import verifiers
    from reasoner.config import ConfigError, load_plugins

    load_plugins(args.plugins, key="--plugins")
    if args.verifier not in verifiers.names():
        raise ConfigError(f"--verifier {args.verifier!r} is not registered; registered verifiers: "
                          f"{', '.join(verifiers.names())} (load your own with --plugins mypkg.verifiers or a "
                          ".py file)")


def main(args: argparse.Namespace) -> int:
    _check_verifier(args)
    if args.dataset:
        return _dataset(args)
    return _one(args)
