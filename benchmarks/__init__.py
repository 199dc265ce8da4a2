"""Benchmark evaluation: unbiased estimators, named suites, the full protocol.

    from benchmarks import pass_at_k, maj_at_k, avg_at_n, evaluate, run_suites
"""
from .metrics import answer_classes, avg_at_n, default_k_list, maj_at_k, maj_at_k_classes, mean_std, pass_at_k
from .run import EvalResult, aggregate, evaluate, run_suites
from .suites import SUITES, Protocol, Suite, load_suite, resolve_suite

__all__ = ["pass_at_k", "maj_at_k", "maj_at_k_classes", "avg_at_n", "answer_classes", "default_k_list", "mean_std",
           "EvalResult", "evaluate", "aggregate", "run_suites", "SUITES", "Suite", "Protocol", "load_suite",
           "resolve_suite"]
