"""reasoner: reinforcement learning from verifiable rewards for small reasoning models."""
import os

# OpenMP threads that spin while waiting take the cores from every other process: on a busy
# 2-core machine 2-thread torch runs collapse (scripts/bench_step.py; figures in docs/benchmarks.md,
# "reasoner/__init__.py"); sleeping waiters cost nothing idle.
# Takes effect only when reasoner is imported before torch; a user's own setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# The checkout's folders verifiers/ and benchmarks/ are the packages reasoner.verifiers and
# reasoner.benchmarks: an install maps them there (pyproject.toml, package-dir); a checkout on
# sys.path without an install finds them through this search path. Only from a checkout (beside
# its pyproject.toml): an installed reasoner never looks in site-packages for them.
_checkout = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if os.path.isfile(os.path.join(_checkout, "pyproject.toml")) and os.path.isdir(os.path.join(_checkout, "verifiers")):
    __path__.append(_checkout)  # noqa: F821 - a package's own __path__
