#!/usr/bin/env python
"""AIME 2024 + 2025 with the common protocol: 32 samples, temperature 0.6, top_p 0.95, 3 seeds.

    python scripts/eval_aime.py MODEL [--out runs/aime] [any `reasoner eval` flag to override]

One AIME problem is 3.3 points: read avg@32 with its std across seeds, not greedy alone.
"""
import sys

from reasoner.commands.eval import run_preset

if __name__ == "__main__":
    sys.exit(run_preset("aime24,aime25", sys.argv[1:], n=32, temperature=0.6, top_p=0.95, max_new_tokens=8192,
                        seeds=3, out="runs/eval_aime"))
