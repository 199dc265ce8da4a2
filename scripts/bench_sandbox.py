"""Sandbox throughput: programs/s and per-run overhead vs a plain subprocess.run, side by side.

    python scripts/bench_sandbox.py [--n 60] [--workers 2] [--burners 2] [--reference]

Rows: a trivial program (``calls`` format, one case) and the HumanEval canonical solutions
(from ``$REASONER_DATA_DIR``, default ``../shared/data`` next to the repository, when present).
``--burners N`` runs N CPU-burning processes beside it (a busy machine); ``--reference`` instead
scores every HumanEval and MBPP reference solution and prints how many scored 1. Columns: programs/s through ``verifiers.code.batch``
on a pool of ``--workers`` threads, the median seconds of one sandboxed ``check`` alone,
and the median seconds of a plain ``subprocess.run([python, -c, program + test])``.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from reasoner.types import Problem  # noqa: E402
from reasoner.verifiers import code, sandbox  # noqa: E402
from reasoner.verifiers.code import check  # noqa: E402

DATA = Path(os.environ.get("REASONER_DATA_DIR") or Path(__file__).resolve().parents[2] / "shared" / "data")
HE = DATA / "humaneval" / "HumanEval.jsonl"
MBPP = DATA / "mbpp" / "mbpp.jsonl"
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


def reference(workers: int | None) -> None:
    """Every reference solution of HumanEval and MBPP: how many score 1, and the failures."""
    he = [json.loads(line) for line in HE.open()]
    mb = [json.loads(line) for line in MBPP.open()]
    suites = {
        "humaneval": ([r["canonical_solution"] for r in he], [Problem(r["task_id"], "", verifier="code", tests={
            "format": "humaneval", "prompt": r["prompt"], "test": r["test"], "entry_point": r["entry_point"]})
            for r in he]),
        "mbpp": ([r["code"] for r in mb], [Problem(str(r["task_id"]), "", verifier="code", tests={
            "format": "mbpp", "test_list": r["test_list"], "setup": r["test_setup_code"]}) for r in mb]),
    }
    for name, (codes, probs) in suites.items():
        t = time.perf_counter()
        out = dict(code.stream(codes, probs, workers=workers))
        bad = [(probs[i].id, v.status, v.detail) for i, v in sorted(out.items()) if v.score != 1.0]
        print(f"{name}: {len(out) - len(bad)}/{len(out)} scored 1 in {time.perf_counter() - t:.1f}s")
        for b in bad[:10]:
            print("   ", *b)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=60)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--burners", type=int, default=0, help="CPU-burning processes to run beside it")
    ap.add_argument("--reference", action="store_true", help="score all HumanEval + MBPP reference solutions")
    a = ap.parse_args()
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(a.burners)]
    try:
        _run(a)
    finally:
        for b in burners:
            b.kill()
            b.wait()


def _run(a: argparse.Namespace) -> None:
    rep = sandbox.isolation_report()
    print(f"isolation: {rep['level']}  cgroup: {rep['cgroup']}  workers: {a.workers or 'all cores'}  "
          f"burners: {a.burners}  cores: {os.cpu_count()}")
    if a.reference:
        return reference(a.workers)
    print(f"{'workload':10} {'n':>4} {'programs/s':>11} {'sandbox s':>10} {'plain s':>9} {'overhead s':>11}")
    for name in ("trivial", "humaneval") if HE.exists() else ("trivial",):
        r = bench(name, a.n, a.workers)
        print(f"{r['workload']:10} {r['n']:4d} {r['programs_per_s']:11.1f} {r['sandbox_s']:10.4f} "
              f"{r['plain_s']:9.4f} {r['overhead_s']:11.4f}")


if __name__ == "__main__":
    main()
