r"""The math answer verifier: extract the final answer, compare it with the gold answer.

    >>> from verifiers.math import check
    >>> check("so the answer is $\\boxed{0.5}$", "\\frac12").status
    'correct'
    >>> check("47", "47").status, check("5 or 6", "5").status
    ('correct', 'wrong')

Exact paths (normalised strings, integers, decimals, fractions, structures of those) run
in-process and are bounded by input-size caps. Anything needing sympy goes to a persistent pool
of worker processes, each killed and replaced when it passes its deadline, so a verdict always
comes back in about ``timeout`` seconds, from any thread.
"""
from __future__ import annotations

import functools
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Sequence

from reasoner import verifiers
from reasoner.verifiers import Verdict
from reasoner.verifiers.math.compare import compare
from reasoner.verifiers.math.extract import FALLBACKS, extract_answer, extract_gold
from reasoner.verifiers.math.normalize import MAX_ANSWER, Norm, normalize
from reasoner.verifiers.math.pool import get_pool, shutdown

DEFAULT_TIMEOUT = 2.0  # seconds per symbolic comparison

__all__ = ["check", "check_batch", "extract_answer", "extract_gold", "equivalent", "normalize",
           "DEFAULT_TIMEOUT", "FALLBACKS", "shutdown"]


class _Prepared:
    """One item after the in-process stage: either a final verdict or a symbolic job."""

    __slots__ = ("verdict", "pred", "gold", "answer")

    def __init__(self, verdict: Verdict | None, pred: Norm | None = None, gold: Norm | None = None,
                 answer: str | None = None):
        self.verdict, self.pred, self.gold, self.answer = verdict, pred, gold, answer


def _verdict(ok: bool, answer: str | None, how: str) -> Verdict:
    return Verdict(1.0, "correct", answer, how) if ok else Verdict(0.0, "wrong", answer, how)


def _prepare(response: str, gold: Any, fallback: str) -> _Prepared:
    """Extraction, normalisation and the fast exact comparison; never raises."""
    try:
        g = extract_gold(gold)
        if g is None:
            return _Prepared(Verdict(0.0, "error", None, "no gold answer"))
        ans = extract_answer(response, fallback=fallback)
        if ans is None:
            return _Prepared(Verdict(0.0, "unparseable", None, "no final answer found"))
        short = ans[:200]
        if len(ans) > MAX_ANSWER:
            return _Prepared(Verdict(0.0, "wrong", short, f"answer longer than {MAX_ANSWER} chars"))
        pn, gn = normalize(ans), normalize(g)
        r = compare(pn, gn)
        if r is not None:
            return _Prepared(_verdict(r, ans, "exact match" if r else "exact mismatch"))
        return _Prepared(None, pn, gn, ans)
    except (ValueError, TypeError):
        raise  # bad arguments (unknown fallback, non-str response) are the caller's error
    except RecursionError:
        return _Prepared(Verdict(0.0, "wrong", None, "answer nested too deeply"))
    except Exception as e:  # noqa: BLE001
        return _Prepared(verifiers.error_verdict(e))


def _finish(p: _Prepared, timeout: float, start: float | None = None) -> Verdict:
    """The verdict; a symbolic job gets what is left of ``timeout`` counted from ``start``."""
    if p.verdict is not None:
        return p.verdict
    left = timeout if start is None else timeout - (time.perf_counter() - start)
    if left <= 0:
        return Verdict(0.0, "timeout", p.answer, f"no result within {timeout:g}s")
    res = get_pool().run("compare_symbolic", (p.pred, p.gold), left)
    if res.status == "ok":
        return _verdict(bool(res.value), p.answer, "symbolic match" if res.value else "symbolic mismatch")
    if res.status == "timeout":
        return Verdict(0.0, "timeout", p.answer, res.value)
    return Verdict(0.0, "error", p.answer, str(res.value)[:200])


def _check_timeout(timeout: float) -> float:
    if not timeout or timeout <= 0:
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
    return float(timeout)


def check(response: str, gold: Any, *, fallback: str = "last_number", timeout: float = DEFAULT_TIMEOUT) -> Verdict:
    """Verdict for one model response against one gold answer (raw answer or full solution)."""
    start = time.perf_counter()
    return _finish(_prepare(response, gold, fallback), _check_timeout(timeout), start)


def check_batch(responses: Sequence[str], golds: Sequence[Any], *, fallback: str | Sequence[str] = "last_number",
                timeout: float = DEFAULT_TIMEOUT) -> list[Verdict]:
    """Verdicts for many pairs: exact ones in-process, symbolic ones on all worker processes
    in parallel, each with its own ``timeout``."""
    if len(responses) != len(golds):
        raise ValueError(f"{len(responses)} responses but {len(golds)} gold answers")
    timeout = _check_timeout(timeout)
    fbs = [fallback] * len(responses) if isinstance(fallback, str) else list(fallback)
    prepared = [_prepare(r, g, f) for r, g, f in zip(responses, golds, fbs)]
    todo = [i for i, p in enumerate(prepared) if p.verdict is None]
    out = [p.verdict for p in prepared]
    if todo:
        workers = min(len(todo), get_pool().size)
        if workers == 1:
            for i in todo:
                out[i] = _finish(prepared[i], timeout)
        else:
            with ThreadPoolExecutor(workers, thread_name_prefix="math-verify") as ex:
                for i, v in zip(todo, ex.map(lambda j: _finish(prepared[j], timeout), todo)):
                    out[i] = v
    return out  # type: ignore[return-value]


@functools.lru_cache(maxsize=65536)
def equivalent(a: str, b: str, timeout: float = DEFAULT_TIMEOUT) -> bool:
    """Are two already-extracted answers the same (used to group maj@k votes)? False on timeout."""
    if a is None or b is None:
        return False
    if len(a) > MAX_ANSWER or len(b) > MAX_ANSWER:
        return a == b
    pa, pb = normalize(a), normalize(b)
    r = compare(pa, pb)
    if r is not None:
        return r
    return _finish(_Prepared(None, pa, pb, a), timeout).status == "correct"


@verifiers.register("math")
def math_verifier(completion: str, problem) -> Verdict:
    """The trainer-facing verifier: ``problem.answer`` is the gold; ``problem.meta['fallback']``
    (``last_number`` or ``none``) picks what to do when the response has no answer marker."""
    return check(completion, problem.answer, fallback=problem.meta.get("fallback", "last_number"))


def _batch(completions: Sequence[str], problems: Sequence[Any]) -> list[Verdict]:
    return check_batch(completions, [p.answer for p in problems],
                       fallback=[p.meta.get("fallback", "last_number") for p in problems])


math_verifier.batch = _batch  # type: ignore[attr-defined]
