"""The ``code`` verifier: run the model's program against unit tests in a sandbox.

``check(response, tests)`` -> ``Verdict``; ``tests["format"]`` is one of:

* ``calls``: ``{"entry_point", "cases": [{"args", "kwargs", "expected"}], "float_tol"?}``.
  The harness calls the function and sends back plain values; the parent compares. The
  strongest format: nothing the program does can make a wrong value pass.
* ``stdio``: ``{"cases": [{"input", "output"}], "float_tol"}``. Each case runs in its own
  process inside the sandbox; stdout is compared in the parent (trailing whitespace and
  blank end lines ignored; numeric tokens within ``float_tol`` when it is set).
* ``humaneval``: ``{"prompt", "test", "entry_point"}``; ``mbpp``: ``{"test_list", "setup"}``.
  Judged by record and replay (``verifiers.code.replay``): the sandbox runs the test with
  every ``assert`` stripped down to its calls of the program's functions and records their
  plain return values; the parent replays the ORIGINAL test with those values.

Verdict statuses: ``correct`` (every test passed; score 1, or the fraction with
``partial=True``), ``wrong`` (a test failed), ``timeout`` (a time limit stopped it: the CPU
budget ``timeout``, or the generous wall-clock safety net; ``detail`` says which),
``error`` (no runnable program: syntax error, crash on load, early exit, bad tests).
``detail`` names the first failing test index and why.

Residual risk (HumanEval/MBPP). The stripped test still runs next to the program, so the
program can see everything the test computes OUTSIDE its assert statements: the arguments it
is called with, and values a test prepares before asserting (e.g. HumanEval/38 builds the
expected string in a variable, then asserts ``candidate(encoded) == str``). A program that
walks the stack (``sys._getframe``) can read such a variable and return it. Expected values
written inside the assert (the common case) never reach the sandbox. A program may also
redefine the prompt's helper functions that the test uses (``encode_cyclic``), exactly as
with the original HumanEval harness. The ``calls`` format has neither risk; prefer it.
Programs get the Python standard library only (no site-packages).
"""
from __future__ import annotations

import dataclasses
import json
import os
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any, Iterator

from reasoner import verifiers
from reasoner.verifiers import Verdict
from reasoner.verifiers import sandbox
from reasoner.verifiers.code import formats

_HERE = os.path.dirname(__file__)
HARNESS_SOURCE = "\n".join(open(os.path.join(_HERE, f)).read() for f in ("values.py", "harness.py"))
DEFAULT_TIMEOUT = 10.0


def isolation_report() -> dict:
    """What this machine supports (measured once): ``{"level": "strong"|"weak", ...}``."""
    return dict(sandbox.isolation_report())


def require_isolation(allow_weak: bool) -> str:
    """The isolation level; raises RuntimeError on a weak machine unless ``allow_weak``."""
    rep = sandbox.isolation_report()
    if rep["level"] != "strong" and not allow_weak:
        raise RuntimeError(
            f"code verifier: strong sandbox isolation is unavailable ({rep.get('why_weak')}). "
            "Install bubblewrap (apt-get install bubblewrap) or set allow_weak_sandbox: true to run "
            "untrusted programs with process limits only (they can read files and use the network).")
    return rep["level"]


def _lines(stdout: bytes) -> list[dict]:
    out = []
    for raw in stdout.splitlines():
        try:
            obj = json.loads(raw)
        except (ValueError, RecursionError):  # whatever the sandbox printed
            continue
        if isinstance(obj, dict):
            out.append(obj)
    return out


def _limits(plan: formats.Plan, wall_timeout: float | None) -> sandbox.Limits:
    return sandbox.Limits(cpu_s=plan.cpu_s, wall_s=wall_timeout or sandbox.wall_for(plan.cpu_s))


def _not_loaded(plan: formats.Plan, res: sandbox.RunResult, lim: sandbox.Limits) -> Verdict:
    if res.timed_out:
        return Verdict(0.0, "timeout", plan.program, f"timed out while loading: {res.why_timed_out(lim)}")
    why = "output over the cap" if res.truncated else f"exit code {res.returncode}"
    tail = res.stderr.decode(errors="replace").strip()[-150:]
    return Verdict(0.0, "error", plan.program, f"sandbox run ended before the program loaded ({why}) {tail}".strip())


def _verdict(plan: formats.Plan, res: sandbox.RunResult, partial: bool, lim: sandbox.Limits) -> Verdict:
    lines = _lines(res.stdout)
    events = {ln.get("event"): ln for ln in lines if "event" in ln}
    if "load_error" in events:
        return Verdict(0.0, "error", plan.program, f"program failed: {events['load_error'].get('error')}")
    if "loaded" not in events:
        return _not_loaded(plan, res, lim)
    results = plan.judge(lines)
    if not results:
        return Verdict(0.0, "error", plan.program, "no tests to run")
    passed = sum(r is None for r in results)
    if passed == len(results):
        return Verdict(1.0, "correct", plan.program, f"{passed}/{len(results)} tests passed")
    i = next(k for k, r in enumerate(results) if r is not None)
    status = "timeout" if isinstance(results[i], formats.TimedOut) else "wrong"
    msg = results[i]
    if "done" not in events and (res.timed_out or res.truncated):
        status = "timeout" if res.timed_out else "error"
        why = res.why_timed_out(lim) if res.timed_out else "output over the cap"
        msg = f"{status} ({why})" + ("" if results[i] == "not reached" else f": {results[i]}")
    score = passed / len(results) if partial else 0.0
    return Verdict(score, status, plan.program, f"test {i}: {msg}; {passed}/{len(results)} passed")


def check(response: str, tests: dict, *, timeout: float = DEFAULT_TIMEOUT, partial: bool = False,
          wall_timeout: float | None = None) -> Verdict:
    """Score one response against ``tests`` (see the module docstring for the formats).

    ``timeout`` is CPU seconds (per stdio case; for the whole run otherwise): the same budget
    on an idle and a busy machine. ``wall_timeout`` is the safety net for programs that sleep
    or block (default ``sandbox.wall_for``); a ``timeout`` verdict says which one fired.
    """
    plan = formats.plan(response, tests, timeout)  # bad tests raise ValueError: caller's bug
    lim = _limits(plan, wall_timeout)
    task = dict(plan.task, limits=dict(dataclasses.asdict(lim), rlimit_cpu_s=sandbox.rlimit_cpu(lim)))
    res = sandbox.run_python(HARNESS_SOURCE, json.dumps(task).encode(), lim)
    return _verdict(plan, res, partial, lim)


def _one(completion: str, problem: Any) -> Verdict:
    try:
        return check(completion, problem.tests or {}, **problem.meta.get("code_check", {}))
    except Exception as e:
        return verifiers.error_verdict(e)


def stream(completions: list[str], problems: list[Any], workers: int | None = None) -> Iterator[tuple[int, Verdict]]:
    """Yield ``(index, verdict)`` as sandbox runs finish, on a pool of ``workers`` threads
    (default: one per core; each thread waits on its own sandbox process)."""
    workers = workers or os.cpu_count() or 1
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futs = {pool.submit(_one, c, p): i for i, (c, p) in enumerate(zip(completions, problems, strict=True))}
        for f in as_completed(futs):
            yield futs[f], f.result()


def batch(completions: list[str], problems: list[Any]) -> list[Verdict]:
    out: list[Verdict | None] = [None] * len(completions)
    for i, v in stream(completions, problems):
        out[i] = v
    return out  # type: ignore[return-value]


@verifiers.register("code")
def code_verifier(completion: str, problem: Any) -> Verdict:
    """Trainer-facing verifier: ``problem.tests`` holds one of the formats above."""
    return _one(completion, problem)


code_verifier.batch = batch  # type: ignore[attr-defined]
code_verifier.stream = stream  # type: ignore[attr-defined]
