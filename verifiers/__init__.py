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


def score_all(completions: list[str], problems: list[Any]) -> list[Verdict]:
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
        batch = getattr(fn, "batch", None)
        if batch is not None:
            try:
                for i, v in zip(idx, batch([completions[i] for i in idx], [problems[i] for i in idx])):
                    out[i] = v
                continue
            except Exception:  # fall back to one by one so a single bad item is isolated
                pass
        for i in idx:
            try:
                out[i] = fn(completions[i], problems[i])
            except Exception as e:
                out[i] = error_verdict(e)
    return out  # type: ignore[return-value]
