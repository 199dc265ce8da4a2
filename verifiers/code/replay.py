"""Record in the sandbox, replay in the parent: how arbitrary test code is judged safely.

HumanEval's ``check`` and MBPP's assert lines are code that holds the expected values. We
never send that code as-is next to the program:

1. ``strip(test, targets)`` rewrites every ``assert`` into bare calls of the program's
   functions (``assert f(x) == 3`` -> ``try: f(x) except Exception: pass``). Only this
   stripped test runs in the sandbox, where a wrapper records each call's arguments and its
   *plain* return value (exact builtin types; see ``harness.enc``).
2. ``replay`` then runs the ORIGINAL test in the parent, where the program's functions are
   replaced by stubs returning the recorded values. No untrusted code runs there; a value
   the program did not return for those arguments is a failure. Each top-level statement
   holding an assert is one test (its index is what ``detail`` names).

So exiting early, printing markers, ``__eq__`` overrides, patched builtins or asserts, and
killing the harness cannot make a test pass: only returning the right plain values can.
"""
from __future__ import annotations

import ast
import random
import sys
from typing import Any, Callable

from verifiers.code import extract, harness


_NO_IMPORT = {"antigravity", "this", "webbrowser", "tkinter", "turtle", "turtledemo", "idlelib", "__main__"}


class ReplayMismatch(Exception):
    pass


def _called_names(tree: ast.AST) -> set[str]:
    return {n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}


def _outer_calls(expr: ast.AST, targets: set[str]) -> list[ast.Call]:
    """Calls of a target name not nested inside another target call, in source order."""
    out: list[ast.Call] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in targets:
            out.append(node)
            return
        for child in ast.iter_child_nodes(node):
            visit(child)
    visit(expr)
    return out


class _Strip(ast.NodeTransformer):
    def __init__(self, targets: set[str]):
        self.targets = targets

    def visit_Assert(self, node: ast.Assert) -> list[ast.stmt]:
        body = [ast.Expr(c) for c in _outer_calls(node.test, self.targets)] or [ast.Pass()]
        handler = ast.ExceptHandler(type=ast.Name("Exception", ast.Load()), name=None, body=[ast.Pass()])
        return [ast.Try(body=[s], handlers=[handler], orelse=[], finalbody=[]) for s in body]


def strip(test: str, targets: set[str]) -> str:
    """The test with each assert reduced to its calls of ``targets`` (no expected values)."""
    tree = _Strip(targets).visit(ast.parse(test))
    return ast.unparse(ast.fix_missing_locations(tree))


def targets_for(test: str, program_names: set[str], extra: tuple[str, ...] = ()) -> set[str]:
    return (_called_names(ast.parse(test)) & program_names) | set(extra)


def recorded(lines: list[dict]) -> dict[tuple[str, str], dict]:
    """(name, args key) -> the first record the sandbox sent for it."""
    out: dict[tuple[str, str], dict] = {}
    for rec in lines:
        if "rec" in rec and isinstance(rec.get("key"), str):
            out.setdefault((rec["rec"], rec["key"]), rec)
    return out


def _stub(name: str, table: dict) -> Callable:
    def stub(*args: Any, **kwargs: Any) -> Any:
        rec = table.get((name, harness.key(args, kwargs)))
        if rec is None:
            raise ReplayMismatch(f"{name} was not run on these arguments")
        if "error" in rec:
            raise ReplayMismatch(f"{name} raised {rec['error']}")
        return harness.dec(rec["value"])
    return stub


def _safe_imports(program: str) -> str:
    """The program's top-level stdlib imports (MBPP asserts may use e.g. ``math``)."""
    keep = []
    for node in extract.parse_quiet(program).body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            mods = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            roots = {m.split(".")[0] for m in mods}
            if roots <= sys.stdlib_module_names and not roots & _NO_IMPORT:
                keep.append(ast.unparse(node))
    return "\n".join(keep)


def _wrap_tests(stmts: list[ast.stmt], first: int) -> tuple[list[ast.stmt], int]:
    """Wrap each statement that holds an assert in try/except reporting its index."""
    out, k = [], first
    for s in stmts:
        if not any(isinstance(n, ast.Assert) for n in ast.walk(s)):
            out.append(s)
            continue
        code = ast.parse(f"try:\n    pass\nexcept Exception as _e:\n    __fail__({k}, _e)\nelse:\n    __pass__({k})").body[0]
        code.body = [s]
        out.append(code)
        k += 1
    return out, k


def instrument(test: str, check_fn: str | None) -> tuple[str, int]:
    """The test with per-assert reporting; inside ``check_fn`` when given, else top level."""
    tree = ast.parse(test)
    n = 0
    if check_fn is None:
        tree.body, n = _wrap_tests(tree.body, 0)
    else:
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and node.name == check_fn:
                node.body, n = _wrap_tests(node.body, 0)
    return ast.unparse(ast.fix_missing_locations(tree)), n


def replay(test: str, setup: str, program: str, names: set[str], table: dict,
           entry_point: str | None) -> list[str | None]:
    """Run the original test against recorded values; per test: None (pass) or why it failed."""
    src, n = instrument(test, "check" if entry_point else None)
    results: list[str | None] = ["not reached"] * n

    def passed(i: int) -> None:
        results[i] = None

    def failed(i: int, e: BaseException) -> None:
        results[i] = f"{type(e).__name__}: {e}"[:200] if str(e) else type(e).__name__

    ns: dict[str, Any] = {"__name__": "__replay__", "__pass__": passed, "__fail__": failed}
    exec(_safe_imports(program), ns)
    ns.update({nm: _stub(nm, table) for nm in names})
    state = random.getstate()
    random.seed(0)
    try:
        exec(setup, ns)
        exec(compile(src, "<test>", "exec"), ns)
        if entry_point:
            ns["check"](ns[entry_point])
    except Exception as e:  # a failure outside any assert statement: what was not reached fails
        results = [r if r != "not reached" else f"{type(e).__name__}: {e}"[:200] for r in results]
    finally:
        random.setstate(state)
    return results
