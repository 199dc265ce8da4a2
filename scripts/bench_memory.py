"""Does a long run grow in memory? Train the embedded default for N steps (300 by default) and
print the process RSS after the first update and at the end, plus the median step time.

    python scripts/bench_memory.py                      # 300 steps of the embedded default
    python scripts/bench_memory.py --steps 50 run.threads=2 data.eval_size=32

Extra ``key.sub=value`` arguments override the config (as for ``reasoner train``). RSS is
read with psutil after every update (``ppo_update`` is wrapped, the trainer is unchanged);
a step's time is the wall time between two consecutive update ends (evaluation included).
Child processes (the reference process of a small model, the math verifier's workers) are
reported by their own memory (USS: pages no other process maps), read the same way.
"""
from __future__ import annotations

import argparse
import statistics
import time

import psutil

import reasoner.trainer as trainer
from reasoner.config import load_config

MB = 2 ** 20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--out", default="runs/bench_memory")
    ap.add_argument("overrides", nargs="*", metavar="key.sub=value")
    args = ap.parse_args()
    cfg = load_config(None, [f"run.steps={args.steps}", f"run.out_dir={args.out}", "run.progress=false",
                             "run.save_every=100", *args.overrides])
    proc, rss, kids, ends = psutil.Process(), [], [], []
    real = trainer.ppo_update

    def measured(*a, **k):
        out = real(*a, **k)
        rss.append(proc.memory_info().rss)
        kids.append(sum(_uss(c) for c in proc.children(recursive=True)))
        ends.append(time.perf_counter())
        return out

    trainer.ppo_update = measured
    rss_before = proc.memory_info().rss
    trainer.train(cfg)
    steps = [b - a for a, b in zip(ends, ends[1:])]
    print(f"steps {len(rss)}   RSS before loading {rss_before / MB:.0f} MiB   after step 1 {rss[0] / MB:.0f} MiB   "
          f"after step {len(rss)} {rss[-1] / MB:.0f} MiB   (growth {(rss[-1] - rss[0]) / MB:+.1f} MiB; "
          f"step {len(rss) // 2}: {rss[len(rss) // 2] / MB:.0f} MiB)")
    print(f"children's own memory (USS) after step 1 {kids[0] / MB:.0f} MiB, step {len(kids) // 2} "
          f"{kids[len(kids) // 2] / MB:.0f} MiB, step {len(kids)} {kids[-1] / MB:.0f} MiB")
    print(f"median step time {statistics.median(steps):.3f} s   (min {min(steps):.3f}, max {max(steps):.3f})")


def _uss(p: psutil.Process) -> int:
    try:
        return p.memory_full_info().uss
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return 0


if __name__ == "__main__":
    main()
