"""Reference checkers we compare against: exact string match and math-verify (plain, and with the
gold wrapped in ``$...$``). Used by ``reasoner verify --dataset`` and ``scripts/bench_verifiers.py``.

math-verify bounds its own work with ``signal.alarm``, which only works in the main thread; call
these from the main thread (as the CLI and the bench do).
"""
from __future__ import annotations

from typing import Callable

from reasoner.verifiers.math.extract import extract_answer, extract_gold


def exact_match(response: str, gold: str) -> bool:
    """Extracted answer == extracted gold, after stripping spaces and ``$``."""
    a, g = extract_answer(response), extract_gold(gold)
    clean = lambda s: "".join(s.split()).strip("$.")  # noqa: E731
    return a is not None and g is not None and clean(a) == clean(g)


def _math_verify(response: str, gold: str, wrap: bool, timeout: int = 5) -> bool:
    from math_verify import parse, verify

    g = parse(f"${gold}$" if wrap else gold, parsing_timeout=timeout)
    return bool(g) and bool(verify(g, parse(response, parsing_timeout=timeout), timeout_seconds=timeout))


def math_verify_plain(response: str, gold: str, timeout: int = 5) -> bool:
    return _math_verify(response, gold, wrap=False, timeout=timeout)


def math_verify_wrapped(response: str, gold: str, timeout: int = 5) -> bool:
    return _math_verify(response, gold, wrap=True, timeout=timeout)


BASELINES: dict[str, Callable[[str, str], bool]] = {
    "exact": exact_match, "math-verify": math_verify_plain, "math-verify $gold$": math_verify_wrapped}


def run_safely(fn: Callable[[str, str], bool], response: str, gold: str) -> bool:
    try:
        return fn(response, gold)
    except Exception:  # noqa: BLE001 - a baseline crashing counts as "not correct"
        return False
