"""Benchmark evaluation: unbiased estimators, named suites, the full protocol.

    from reasoner.benchmarks import pass_at_k, maj_at_k, avg_at_n, evaluate, run_suites

The estimators import nothing heavy; ``evaluate``/``run_suites`` (torch, verifiers) load on
first use.
"""
from .metrics import answer_classes, avg_at_n, default_k_list, maj_at_k, maj_at_k_classes, mean_std, pass_at_k

_LAZY = {"EvalResult": "run", "aggregate": "run", "evaluate": "run", "run_suites": "run", "load_suites": "run",
         "TrainingEval": "run",
         "SUITES": "suites", "Suite": "suites", "Protocol": "suites", "load_suite": "suites",
         "resolve_suite": "suites"}

__all__ = ["pass_at_k", "maj_at_k", "maj_at_k_classes", "avg_at_n", "answer_classes", "default_k_list", "mean_std",
           *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
