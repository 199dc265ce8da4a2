"""Accuracy and speed of our math checker against math-verify, on the labelled table.

    python scripts/bench_verifiers.py [--cases tests/data/math_cases.jsonl] [--timeout 2]

For each checker: accuracy, false-positive rate (wrong answers accepted / all wrong answers),
false-negative rate (right answers rejected / all right answers), median and p99 latency of one
call, throughput. Ours is also run through ``check_batch`` (all cores), and on adversarial inputs
to show that no call overruns its time limit by more than 10 %.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from verifiers.math import check, check_batch, shutdown  # noqa: E402
from verifiers.math.pool import get_pool  # noqa: E402
from verifiers.math.baselines import math_verify_plain, math_verify_wrapped, run_safely  # noqa: E402

ADVERSARIAL = [
    ("\\boxed{2^{2^{2^{2^{2^{100}}}}}}", "5"), ("\\boxed{(10^{10^{10}})!}", "5"), ("\\boxed{100000!!}", "3"),
    ("\\boxed{" + "{" * 5000 + "1" + "}" * 5000 + "}", "1"), ("x " * 500_000 + "\\boxed{7}", "7"),
    ("\\boxed{\\sum_{n=1}^{10^{9}} n^{n}}", "12"), ("\\boxed{" + "+".join(["x"] * 1500) + "}", "1500x"),
]


def load(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.open(encoding="utf-8") if line.strip()]


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def score(pred: list[bool], rows: list[dict]) -> dict[str, float]:
    exp = [r["expected"] for r in rows]
    pos, neg = sum(exp), len(exp) - sum(exp)
    fp = sum(p and not e for p, e in zip(pred, exp))
    fn = sum(e and not p for p, e in zip(pred, exp))
    return {"acc": 1 - (fp + fn) / len(exp), "fpr": fp / max(neg, 1), "fnr": fn / max(pos, 1)}


def timed(fn, rows: list[dict]) -> tuple[list[bool], list[float]]:
    preds, lat = [], []
    for r in rows:
        t = time.perf_counter()
        preds.append(fn(r["response"], r["gold"]))
        lat.append(time.perf_counter() - t)
    return preds, lat


def math500_rows(path: Path) -> list[dict]:
    """Labels that need no judgement: each gold boxed in a sentence (correct), and each gold
    against the next problem's gold when the two strings differ (wrong, except where two
    problems share an answer written differently)."""
    golds = [r["answer"] for r in load(path)]
    rows = [{"gold": g, "response": f"The final answer is $\\boxed{{{g}}}$.", "expected": True} for g in golds]
    rows += [{"gold": g, "response": f"\\boxed{{{h}}}", "expected": False}
             for g, h in zip(golds, golds[1:] + golds[:1]) if g.strip() != h.strip()]
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", default=str(ROOT / "tests/data/math_cases.jsonl"))
    ap.add_argument("--timeout", type=float, default=2.0)
    ap.add_argument("--show-errors", action="store_true", help="list the cases our checker gets wrong")
    ap.add_argument("--math500", default=str(ROOT.parent / "shared/data/math500/test.jsonl"),
                    help="MATH-500 file for an independent check ('' to skip)")
    a = ap.parse_args(argv)
    rows = load(Path(a.cases))
    get_pool().warm()  # start every worker outside the timings

    results = {}
    ours_fn = lambda r, g: check(r, g, timeout=a.timeout).status == "correct"  # noqa: E731
    checkers = (("ours", ours_fn), ("math-verify", lambda r, g: run_safely(math_verify_plain, r, g)),
                ("math-verify $gold$", lambda r, g: run_safely(math_verify_wrapped, r, g)))
    for name, fn in checkers:
        preds, lat = timed(fn, rows)
        results[name] = (score(preds, rows), lat, preds)

    t = time.perf_counter()
    batch = check_batch([r["response"] for r in rows], [r["gold"] for r in rows], timeout=a.timeout)
    batch_s = time.perf_counter() - t

    print(f"{len(rows)} labelled cases ({sum(r['expected'] for r in rows)} correct, "
          f"{sum(not r['expected'] for r in rows)} wrong), timeout {a.timeout:g}s\n")
    print(f"{'checker':<20}{'accuracy':>9}{'FP rate':>9}{'FN rate':>9}{'median ms':>11}{'p99 ms':>9}{'max ms':>9}{'items/s':>10}")
    for name, (s, lat, _) in results.items():
        print(f"{name:<20}{s['acc']:>9.1%}{s['fpr']:>9.1%}{s['fnr']:>9.1%}{1e3 * statistics.median(lat):>11.2f}"
              f"{1e3 * pct(lat, 0.99):>9.1f}{1e3 * max(lat):>9.1f}{len(lat) / sum(lat):>10.0f}")
    bs = score([v.status == "correct" for v in batch], rows)
    print(f"{'ours (check_batch)':<20}{bs['acc']:>9.1%}{bs['fpr']:>9.1%}{bs['fnr']:>9.1%}{'':>11}{'':>9}{'':>9}"
          f"{len(rows) / batch_s:>10.0f}")

    best_mv = max(results["math-verify"][0]["acc"], results["math-verify $gold$"][0]["acc"])
    print(f"\nours - best math-verify: {100 * (results['ours'][0]['acc'] - best_mv):+.1f} points")

    lim = 1.1 * a.timeout
    print(f"\nadversarial inputs (limit {a.timeout:g}s, allowed {lim:.2f}s):")
    over = 0
    for resp, gold in ADVERSARIAL:
        t = time.perf_counter()
        v = check(resp, gold, timeout=a.timeout)
        dt = time.perf_counter() - t
        over += dt > lim
        print(f"  {dt:6.3f}s  {v.status:<11} {resp[:50]!r}")
    print(f"calls over the limit by >10%: {over} of {len(ADVERSARIAL)}")

    if a.math500 and Path(a.math500).is_file():
        indep = math500_rows(Path(a.math500))
        print(f"\nindependent check on MATH-500 ({sum(r['expected'] for r in indep)} golds boxed in a sentence: "
              f"should be correct; {sum(not r['expected'] for r in indep)} golds against the next problem's "
              f"different answer: should be wrong)")
        for name, fn in checkers:
            s = score(timed(fn, indep)[0], indep)
            print(f"  {name:<20} accuracy {s['acc']:.1%}  FP rate {s['fpr']:.1%}  FN rate {s['fnr']:.1%}")

    if a.show_errors:
        for r, p in zip(rows, results["ours"][2]):
            if p != r["expected"]:
                print(f"  [{r['category']}] gold={r['gold']!r} response={r['response'][-60:]!r} expected={r['expected']}")
    shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
