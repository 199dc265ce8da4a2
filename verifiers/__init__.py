"""Verifier plugins: a completion and its problem in, a ``Verdict`` out.

A verifier is any callable ``(completion: str, problem) -> Verdict``. Register one with::

    from reasoner import verifiers
    @verifiers.register("shouts")
    def shouts(completion, problem):
        ok = completion.isupper()
        return verifiers.Verdict(float(ok), "correct" if ok else "wrong", completion, "")

A verifier may also expose ``batch(completions, problems) -> list[Verdict]`` to score many
at once (the built-in ones do, in parallel, with a deadline per item; a ``batch`` is trusted to
bound its own time). A plain verifier (no ``batch``) runs in a killable worker process
(``verifiers.workers``): a call that raises gives ``error`` with the exception in ``detail``; one
still running after ``timeout`` seconds is killed and gives ``timeout``; the other items are
scored all the same. Set ``fn.in_process = True`` for one that must run in the caller's process
(it then runs in a thread and cannot be stopped if it hangs).

Load verifiers from your own modules or files with ``load_plugins("mypkg.verifiers,./my.py")``;
installed packages add them through the entry-point group ``reasoner.verifiers``
(``[project.entry-points."reasoner.verifiers"] shouts = "mypkg.verifiers:shouts"``).
``check_names(problems)`` raises a ``ValueError`` naming the first row whose verifier is unknown.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable, NamedTuple, Protocol

from reasoner.registry import Registry
from reasoner.verifiers import workers

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
_BUILTINS = ("reasoner.verifiers.math", "reasoner.verifiers.code", "reasoner.reward_model")
_loaded = False


def _load_plugins() -> None:
    """Import the built-in verifiers and every ``reasoner.verifiers`` entry point, once."""
    global _loaded
    if _loaded:
        return
    _loaded = True
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
    """What a crashing verifier yields: zero reward, never a crashed run; ``detail`` keeps the
    exception's type and message on one line."""
    return Verdict(0.0, "error", None, workers.one_line(exc))


def _row_label(i: int, p: Any) -> str:
    get = p.get if isinstance(p, dict) else (lambda k, d=None: getattr(p, k, d))
    bits = [f"id {get('id')!r}" if get("id") not in (None, "") else "",
            f"from {get('source')}" if get("source") else ""]
    extra = ", ".join(b for b in bits if b)
    return f"row {i}" + (f" ({extra})" if extra else "")


def check_names(problems: Iterable[Any]) -> None:
    """Raise ``ValueError`` naming the first row (index, id, source) whose verifier is not
    registered, the name it asks for, and the registered names. Rows are ``Problem``-like
    objects or dicts with a ``verifier`` field."""
    known = set(names())
    for i, p in enumerate(problems):
        name = p.get("verifier") if isinstance(p, dict) else getattr(p, "verifier", None)
        if name not in known:
            raise ValueError(
                f"{_row_label(i, p)}: unknown verifier {name!r}; registered verifiers: {', '.join(sorted(known))}. "
                "A verifier of your own must be imported before the run: verifiers.load_plugins('mypkg.verifiers') "
                "or a .py file path, or a 'reasoner.verifiers' entry point")


def _import_file(item: str) -> None:
    path = Path(item).expanduser().resolve()
    if not path.is_file():
        raise ValueError(f"verifier plugin {item!r}: no such file")
    modname = f"reasoner_plugin_{path.stem}_{abs(hash(str(path))):x}"
    if modname in sys.modules:
        return
    spec = importlib.util.spec_from_file_location(modname, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[modname] = mod
    try:
        spec.loader.exec_module(mod)
    except BaseException:
        del sys.modules[modname]
        raise


def load_plugins(spec: str | Iterable[str]) -> list[str]:
    """Import modules (``mypkg.verifiers``) or Python files (``./my_verifiers.py``), given as a
    comma-separated string or a list, so their ``@verifiers.register`` runs. Each is imported
    once. Returns the verifier names they added; raises ``ValueError`` naming a plugin that
    cannot be found or fails to import."""
    _load_plugins()
    before = set(REGISTRY.names())
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    for item in (str(x).strip() for x in items):
        if not item:
            continue
        try:
            if item.endswith(".py") or os.sep in item:
                _import_file(item)
            else:
                importlib.import_module(item)
        except ValueError:
            raise
        except ModuleNotFoundError as e:
            raise ValueError(f"verifier plugin {item!r}: {workers.one_line(e)} (give a module on sys.path "
                             "or a path to a .py file)") from e
        except Exception as e:  # noqa: BLE001 - any failure inside the plugin, named in one line
            raise ValueError(f"verifier plugin {item!r} failed to import: {workers.one_line(e)}") from e
    return sorted(set(REGISTRY.names()) - before)


DEFAULT_TIMEOUT = 30.0  # seconds one plain (non-batch) verifier call may take in score_all


def _checked(v: Any, name: str) -> Verdict:
    if not isinstance(v, tuple) or len(v) != 4 or v[1] not in STATUSES:
        return Verdict(0.0, "error", None, f"verifier {name!r} returned {type(v).__name__}, not a Verdict")
    return Verdict(float(v[0]), v[1], v[2], v[3])


def _timeout_verdict(name: str, timeout: float) -> Verdict:
    return Verdict(0.0, "timeout", None, f"verifier {name!r} did not answer within {timeout:g}s")


def _in_worker(name: str, completion: str, problem: Any, timeout: float) -> Verdict:
    reply = workers.get_pool().run(name, completion, problem, timeout)
    if reply.status == "ok":
        return _checked(reply.value, name)
    if reply.status == "timeout":
        return _timeout_verdict(name, timeout)
    return Verdict(0.0, "error", None, str(reply.value))


def _in_threads(fn: Verifier, name: str, completions: list[str], problems: list[Any], timeout: float) -> list[Verdict]:
    """``fn.in_process`` verifiers: one daemon thread per item, one deadline for the batch. A
    call still running then gives ``timeout``; its thread cannot be stopped, but never blocks exit."""
    results: dict[int, Verdict] = {}
    events = [threading.Event() for _ in completions]

    def call(i: int, c: str, p: Any) -> None:
        try:
            results[i] = _checked(fn(c, p), name)
        except Exception as e:  # noqa: BLE001 - a crashing verifier yields an error verdict
            results[i] = error_verdict(e)
        finally:
            events[i].set()
    for i, (c, p) in enumerate(zip(completions, problems)):
        threading.Thread(target=call, args=(i, c, p), daemon=True, name="verifier-inline").start()
    deadline = time.monotonic() + timeout
    done = [ev.wait(max(deadline - time.monotonic(), 0.0)) for ev in events]
    return [results[i] if ok else _timeout_verdict(name, timeout) for i, ok in enumerate(done)]


def _call_each(fn: Verifier, name: str, completions: list[str], problems: list[Any], timeout: float) -> list[Verdict]:
    """Call a plain verifier once per item, each in a killable worker process with its own
    ``timeout`` (see ``verifiers.workers``); the threads used to wait on them end here."""
    if getattr(fn, "in_process", False) or not workers.available():
        return _in_threads(fn, name, completions, problems, timeout)
    n = max(1, min(len(completions), workers.get_pool().size))
    with ThreadPoolExecutor(max_workers=n, thread_name_prefix="verifier-wait") as pool:
        return list(pool.map(lambda cp: _in_worker(name, cp[0], cp[1], timeout), zip(completions, problems)))


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
