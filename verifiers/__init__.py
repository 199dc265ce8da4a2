"""Verifier plugins: a completion and its problem in, a ``Verdict`` out.

A verifier is any callable ``(completion: str, problem) -> Verdict``. Register one with::

    import verifiers

    @verifiers.register("shouts")
    def shouts(completion, problem):
        ok = completion.isupper()
        return verifiers.Verdict(float(ok), "correct" if ok else "wrong", completion, "")

A verifier may also expose ``batch(completions, problems) -> list[Verdict]`` to score many
at once (the built-in ones do, in parallel, with a deadline per item). Installed packages
add verifiers through the entry-point group ``reasoner.verifiers``.
"""
from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from importlib import metadata
from typing import Any, NamedTuple, Protocol

from reasoner.registry import Registry

STATUSES = ("correct", "wrong", "unparseable", "timeout", "error")


class Verdict(NamedTuple):
    score: float  # the reward, usually 1.0 or 0.0
    status: str  # one of STATUSES
    answer: str | None  # what was extracted from the completion (None if nothing)
    detail: str  # a short human-readable reason


class Verifier(Protocol):
    def __call__(self, completion: str, problem: Any) -> Verdict: ...


REGISTRY: Registry[Verifier] = Registry("verifier")
register = REGISTRY.register
register_verifier = register
_BUILTINS = ("verifiers.math", "verifiers.code")
_loaded = False


def _load_plugins() -> None:
    """Import the built-in verifiers and every ``reasoner.verifiers`` entry point, once."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    import importlib

    for mod in _BUILTINS:
        try:
            importlib.import_module(mod)
        except ImportError:  # a built-in that is not present in this checkout
            pass
    for ep in metadata.entry_points(group="reasoner.verifiers"):
        obj = ep.load()
        if ep.name not in REGISTRY:
            register(ep.name)(obj)


def get(name: str) -> Verifier:
    _load_plugins()
    return REGISTRY.get(name)


def names() -> list[str]:
    _load_plugins()
    return REGISTRY.names()


def error_verdict(exc: BaseException) -> Verdict:
    """What a crashing verifier yields: zero reward, never a crashed run."""
    return Verdict(0.0, "error", None, f"{type(exc).__name__}: {exc}"[:200])


DEFAULT_TIMEOUT = 30.0  # seconds a plain (non-batch) verifier call may take in score_all
_pool: ThreadPoolExecutor | None = None


def _threads() -> ThreadPoolExecutor:
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(max_workers=max(4, os.cpu_count() or 1), thread_name_prefix="verifier")
    return _pool


def _checked(v: Any, name: str) -> Verdict:
    if not isinstance(v, tuple) or len(v) != 4 or v[1] not in STATUSES:
        return Verdict(0.0, "error", None, f"verifier {name!r} returned {type(v).__name__}, not a Verdict")
    return Verdict(float(v[0]), v[1], v[2], v[3])


def _call_each(fn: Verifier, name: str, completions: list[str], problems: list[Any], timeout: float) -> list[Verdict]:
    """Call a plain verifier once per item in worker threads, with one deadline for the batch.

    A call that raises gives ``error``; one still running at the deadline gives ``timeout``
    and the run goes on (Python cannot kill a thread: a verifier that never returns keeps
    its thread; the built-in verifiers run their work in killable processes instead).
    """
    futures = [_threads().submit(fn, c, p) for c, p in zip(completions, problems)]
    deadline, out = time.monotonic() + timeout, []
    for fut in futures:
        try:
            out.append(_checked(fut.result(timeout=max(deadline - time.monotonic(), 0.0)), name))
        except FutureTimeout:
            out.append(Verdict(0.0, "timeout", None, f"verifier {name!r} did not answer within {timeout:g}s"))
        except Exception as e:  # noqa: BLE001 - a crashing verifier yields an error verdict
            out.append(error_verdict(e))
    return out


def score_all(completions: list[str], problems: list[Any], timeout: float = DEFAULT_TIMEOUT) -> list[Verdict]:
    """Score completion i against problems[i], grouping by verifier; never raises."""
    out: list[Verdict | None] = [None] * len(completions)
    by_name: dict[str, list[int]] = {}
    for i, p in enumerate(problems):
        by_name.setdefault(p.verifier, []).append(i)
    for name, idx in by_name.items():
        try:
            fn = get(name)
        except KeyError as e:
            for i in idx:
                out[i] = error_verdict(e)
            continue
        comps, probs = [completions[i] for i in idx], [problems[i] for i in idx]
        batch = getattr(fn, "batch", None)
        verdicts = None
        if batch is not None:
            try:
                verdicts = [_checked(v, name) for v in batch(comps, probs)]
            except Exception:  # noqa: BLE001 - fall back to one by one so a single bad item is isolated
                verdicts = None
        if verdicts is None or len(verdicts) != len(idx):
            verdicts = _call_each(fn, name, comps, probs, timeout)
        for i, v in zip(idx, verdicts):
            out[i] = v
    return out  # type: ignore[return-value]
