#!/usr/bin/env python
"""GSM8K test (1319 problems): greedy accuracy plus 4 samples at temperature 0.6.

    python scripts/eval_gsm8k.py MODEL [--few-shot 8] [any `reasoner eval` flag to override]
"""
import sys

from reasoner.commands.eval import run_preset

if __name__ == "__main__":
    sys.exit(run_preset("gsm8k", sys.argv[1:], n=4, temperature=0.6, top_p=0.95, max_new_tokens=1024, seeds=1,
                        out="runs/eval_gsm8k"))
