"""Per test format: the task sent to the sandbox, and the parent-side judgement of its output.

``plan(response, tests, timeout)`` returns a ``Plan``; ``Plan.judge(lines, timed_out)``
turns the harness's JSON lines into one entry per test: ``None`` (passed) or a short reason.
Expected values never leave the parent.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

from reasoner.verifiers import sandbox
from reasoner.verifiers.code import extract, replay, values

FORMATS = ("humaneval", "mbpp", "stdio", "calls")
CASE_OUTPUT_BYTES = 1 << 20


class TimedOut(str):
    """A test's failure reason that is a time limit, not a wrong answer."""


@dataclass
class Plan:
    program: str
    task: dict
    n_tests: int
    judge: Callable[[list[dict]], list[str | None]]
    cpu_s: float  # the run's CPU budget
    meta: dict = field(default_factory=dict)


def _need(tests: dict, *keys: str) -> None:
    missing = [k for k in keys if k not in tests]
    if missing:
        raise ValueError(f"{tests.get('format')!r} tests need keys {missing}; got {sorted(tests)}")


# ---------------------------------------------------------------- comparison of plain values
def _jsonish(v: Any) -> Any:
    """Tuples as lists, like JSON would have them (for expected values that came from JSON)."""
    if type(v) in (list, tuple):
        return [_jsonish(x) for x in v]
    if type(v) is dict:
        return {k: _jsonish(x) for k, x in v.items()}
    return v


def same(actual: Any, expected: Any, tol: float | None) -> bool:
    if tol is not None and type(actual) in (int, float) and type(expected) in (int, float) \
            and float in (type(actual), type(expected)):
        return math.isclose(actual, expected, rel_tol=tol, abs_tol=tol)
    if type(actual) in (list, tuple) and type(actual) is type(expected):
        return len(actual) == len(expected) and all(same(a, e, tol) for a, e in zip(actual, expected))
    if type(actual) is float and type(expected) is float and math.isnan(actual) and math.isnan(expected):
        return True
    return actual == expected


def _case_results(lines: list[dict], n: int) -> list[dict | None]:
    out: list[dict | None] = [None] * n
    for ln in lines:
        i = ln.get("case")
        if isinstance(i, int) and 0 <= i < n and out[i] is None:
            out[i] = ln
    return out


# ---------------------------------------------------------------- calls
def _plan_calls(response: str, tests: dict, timeout: float) -> Plan:
    _need(tests, "entry_point", "cases")
    program = extract.last_block_or_all(response)
    cases = tests["cases"]
    tol = tests.get("float_tol")
    task = {"mode": "calls", "program": program, "entry_point": tests["entry_point"],
            "cases": [{"args": values.enc(list(c.get("args", []))), "kwargs": values.enc(dict(c.get("kwargs", {})))}
                      for c in cases]}

    def judge(lines: list[dict]) -> list[str | None]:
        res = []
        for c, ln in zip(cases, _case_results(lines, len(cases))):
            if ln is None:
                res.append("not reached")
            elif "error" in ln:
                res.append(f"raised {ln['error']}")
            else:
                res.append(_judge_value(ln["value"], c["expected"], tol))
        return res
    return Plan(program, task, len(cases), judge, timeout)


def _judge_value(value: Any, expected: Any, tol: float | None) -> str | None:
    try:
        got = _jsonish(values.dec(value))
    except values.Unsupported as e:
        return f"returned {e}"
    except Exception as e:  # noqa: BLE001 - malformed data from the sandbox is a failure, not a crash
        return f"returned an unreadable value ({type(e).__name__})"
    return None if same(got, _jsonish(expected), tol) else f"returned {_short(got)}"


def _short(v: Any) -> str:
    s = repr(v)
    return s if len(s) <= 80 else s[:77] + "..."


# ---------------------------------------------------------------- stdio
def _lines(s: str) -> list[str]:
    return [ln.rstrip() for ln in s.strip().splitlines()]


def _float_tokens_match(out: str, exp: str, tol: float) -> bool:
    a, b = out.split(), exp.split()
    if len(a) != len(b):
        return False
    for x, y in zip(a, b):
        if x == y:
            continue
        try:
            fx, fy = float(x), float(y)
        except ValueError:
            return False
        if not math.isclose(fx, fy, rel_tol=tol, abs_tol=tol):
            return False
    return True


def stdout_matches(out: str, expected: str, tol: float | None) -> bool:
    """Equal up to trailing whitespace per line and blank lines at the ends; floats within tol."""
    return _lines(out) == _lines(expected) or (tol is not None and _float_tokens_match(out, expected, tol))


def _plan_stdio(response: str, tests: dict, timeout: float) -> Plan:
    _need(tests, "cases")
    program = extract.last_block_or_all(response)
    cases = tests["cases"]
    tol = tests.get("float_tol")
    task = {"mode": "stdio", "program": program, "cases": [c["input"] for c in cases],
            "case_cpu_s": timeout, "case_wall_s": sandbox.wall_for(timeout), "case_output_bytes": CASE_OUTPUT_BYTES}

    def judge(lines: list[dict]) -> list[str | None]:
        res = []
        for c, ln in zip(cases, _case_results(lines, len(cases))):
            if ln is None:
                res.append("not reached")
            elif ln.get("timeout"):
                res.append(TimedOut(f"CPU time limit of {timeout:g}s reached" if ln["timeout"] == "cpu" else
                                    f"wall-clock safety limit of {task['case_wall_s']:g}s reached (sleeping or blocked)"))
            elif ln.get("truncated"):
                res.append(f"output over the {CASE_OUTPUT_BYTES} byte cap")
            elif ln.get("exit") != 0:
                res.append(f"exit code {ln.get('exit')}")
            else:
                res.append(None if stdout_matches(ln["stdout"], c["output"], tol) else "wrong output")
        return res
    return Plan(program, task, len(cases), judge, timeout * len(cases) + 2.0)


# ---------------------------------------------------------------- humaneval / mbpp (record + replay)
def _plan_replay(program: str, test: str, setup: str, entry_point: str | None, timeout: float) -> Plan:
    try:
        tree = extract.parse_quiet(program)
    except SyntaxError:
        tree = extract.parse_quiet("")  # the sandbox reports the syntax error as a load error
    names = extract.top_level_names(tree)
    targets = replay.targets_for(setup + "\n" + test, names, (entry_point,) if entry_point else ())
    state = replay.state_for(setup + "\n" + test, tree, targets | {"candidate"})
    _, n = replay.instrument(test, "check" if entry_point else None, state)
    task = {"mode": "record", "program": program, "targets": sorted(targets), "entry_point": entry_point,
            "test": "\n".join([replay.safe_imports(program), setup, replay.strip(test, targets | {"candidate"}, state)])}

    def judge(lines: list[dict]) -> list[str | None]:
        return replay.replay(test, setup, program, targets, replay.recorded(lines), entry_point, state)
    return Plan(program, task, n, judge, timeout)


def _plan_humaneval(response: str, tests: dict, timeout: float) -> Plan:
    _need(tests, "prompt", "test", "entry_point")
    program = extract.humaneval_program(response, tests["prompt"], tests["entry_point"])
    return _plan_replay(program, tests["test"], "", tests["entry_point"], timeout)


def _plan_mbpp(response: str, tests: dict, timeout: float) -> Plan:
    _need(tests, "test_list")
    program = extract.last_block_or_all(response)
    return _plan_replay(program, "\n".join(tests["test_list"]), tests.get("setup") or "", None, timeout)


_PLANS = {"humaneval": _plan_humaneval, "mbpp": _plan_mbpp, "stdio": _plan_stdio, "calls": _plan_calls}


def plan(response: str, tests: dict, timeout: float) -> Plan:
    if not isinstance(tests, dict) or tests.get("format") not in _PLANS:
        got = tests.get("format") if isinstance(tests, dict) else type(tests).__name__
        raise ValueError(f"unknown code test format {got!r}; valid formats: {', '.join(FORMATS)}")
    return _PLANS[tests["format"]](response, tests, timeout)
