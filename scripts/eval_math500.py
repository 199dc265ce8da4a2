#!/usr/bin/env python
"""MATH-500: 4 samples, temperature 0.6, top_p 0.95, answers in \\boxed{}.

    python scripts/eval_math500.py MODEL [--out runs/math500] [any `reasoner eval` flag to override]
"""
import sys

from reasoner.commands.eval import run_preset

if __name__ == "__main__":
    sys.exit(run_preset("math500", sys.argv[1:], n=4, temperature=0.6, top_p=0.95, max_new_tokens=4096, seeds=1,
                        out="runs/eval_math500"))
