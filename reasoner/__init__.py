"""reasoner: reinforcement learning from verifiable rewards for small reasoning models."""
import os

# OpenMP threads that spin while waiting take the cores from every other process: on a busy
# 2-core machine 2-thread torch runs collapse (scripts/bench_step.py; figures in docs/benchmarks.md,
# "reasoner/__init__.py"); sleeping waiters cost nothing idle.
# Takes effect only when reasoner is imported before torch; a user's own setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
