#!/usr/bin/env python
"""MBPP test split (task_ids 11-510), scored by the sandboxed code verifier: greedy plus
10 samples at temperature 0.8 (pass@1, pass@10).

    python scripts/eval_mbpp.py MODEL [any `reasoner eval` flag to override]
"""
import sys

from reasoner.commands.eval import run_preset

if __name__ == "__main__":
    sys.exit(run_preset("mbpp", sys.argv[1:], n=10, temperature=0.8, top_p=0.95, max_new_tokens=768, seeds=1,
                        k="1,2,4,8,10", out="runs/eval_mbpp"))
