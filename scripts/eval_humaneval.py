#!/usr/bin/env python
"""HumanEval (164 problems), scored by the sandboxed code verifier: pass@1 and pass@10 from
20 samples at temperature 0.8 (the Codex paper's protocol for pass@10), plus greedy.

    python scripts/eval_humaneval.py MODEL [any `reasoner eval` flag to override]
"""
import sys

from reasoner.commands.eval import run_preset

if __name__ == "__main__":
    sys.exit(run_preset("humaneval", sys.argv[1:], n=20, temperature=0.8, top_p=0.95, max_new_tokens=768, seeds=1,
                        k="1,2,4,8,10,16,20", out="runs/eval_humaneval"))
