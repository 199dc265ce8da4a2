"""reasoner: reinforcement learning from verifiable rewards for small reasoning models."""
import os

# OpenMP threads that spin while waiting made 2-thread torch runs 50-100x slower on a busy
# 2-core machine (measured with scripts/bench_step.py); sleeping waiters cost nothing idle.
# Takes effect only when reasoner is imported before torch; a user's own setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
