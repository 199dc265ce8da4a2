"""Sandbox throughput: programs/s and per-run overhead vs a plain subprocess.run, side by side.

    python scripts/bench_sandbox.py [--n 60] [--workers 2]

Rows: a trivial program (``calls`` format, one case) and the HumanEval canonical solutions
(from /work/shared/data when present). Columns: programs/s through ``verifiers.code.batch``
on a pool of ``--workers`` threads, the median seconds of one sandboxed ``check`` alone,
and the median seconds of a plain ``subprocess.run([python, -c, program + test])``.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from reasoner.types import Problem  # noqa: E402
from verifiers import code, sandbox  # noqa: E402
from verifiers.code import check  # noqa: E402

HE = Path("/work/shared/data/humaneval/HumanEval.jsonl")
TRIVIAL = ("def f(x):\n    return x + 1\n",
           {"format": "calls", "entry_point": "f", "cases": [{"args": [1], "kwargs": {}, "expected": 2}]},
           "def f(x):\n    return x + 1\nassert f(1) == 2\n")


def _workload(name: str, n: int) -> list[tuple[str, dict, str]]:
    if name == "trivial":
        return [TRIVIAL] * n
    rows = [json.loads(line) for line in HE.open()][:n]
    return [(r["canonical_solution"], {"format": "humaneval", "prompt": r["prompt"], "test": r["test"],
                                       "entry_point": r["entry_point"]},
             r["prompt"] + r["canonical_solution"] + "\n" + r["test"] + f"\ncheck({r['entry_point']})\n") for r in rows]


def _median(fn, items) -> float:
    ts = []
    for it in items:
        t = time.perf_counter()
        fn(it)
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def bench(name: str, n: int, workers: int) -> dict:
    work = _workload(name, n)
    probs = [Problem(str(i), "", tests=t, verifier="code") for i, (_, t, _) in enumerate(work)]
    t = time.perf_counter()
    out = dict(code.stream([w[0] for w in work], probs, workers=workers))
    rate = len(work) / (time.perf_counter() - t)
    assert all(v.score == 1.0 for v in out.values()), [v.detail for v in out.values() if v.score != 1.0][:3]
    sbx = _median(lambda w: check(w[0], w[1]), work[: min(n, 30)])
    py = sandbox._python_exe()
    plain = _median(lambda w: subprocess.run([py, "-I", "-S", "-c", w[2]], check=True), work[: min(n, 30)])
    return {"workload": name, "n": len(work), "programs_per_s": rate, "sandbox_s": sbx, "plain_s": plain,
            "overhead_s": sbx - plain}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=60)
    ap.add_argument("--workers", type=int, default=None)
    a = ap.parse_args()
    rep = sandbox.isolation_report()
    print(f"isolation: {rep['level']}  cgroup: {rep['cgroup']}  workers: {a.workers or 'all cores'}")
    print(f"{'workload':10} {'n':>4} {'programs/s':>11} {'sandbox s':>10} {'plain s':>9} {'overhead s':>11}")
    for name in ("trivial", "humaneval") if HE.exists() else ("trivial",):
        r = bench(name, a.n, a.workers)
        print(f"{r['workload']:10} {r['n']:4d} {r['programs_per_s']:11.1f} {r['sandbox_s']:10.4f} "
              f"{r['plain_s']:9.4f} {r['overhead_s']:11.4f}")


if __name__ == "__main__":
    main()
