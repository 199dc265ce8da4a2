"""Record in the sandbox, replay in the parent: how arbitrary test code is judged safely.

HumanEval's ``check`` and MBPP's assert lines are code that holds the expected values. We
never send that code as-is next to the program:

1. ``strip(test, targets)`` rewrites every ``assert`` into bare calls of the program's
   functions (``assert f(x) == 3`` -> ``try: f(x) except Exception: pass``). Only this
   stripped test runs in the sandbox, where a wrapper records each call's arguments and its
   *plain* return value (see ``values.enc``).
2. ``replay`` then runs the ORIGINAL test in the parent, where the program's functions are
   replaced by stubs returning the recorded values. No untrusted code runs there; a value
   the program did not return for those arguments is a failure. Each top-level statement
   holding an assert is one test (its index is what ``detail`` names).

So exiting early, printing markers, ``__eq__`` overrides, patched builtins or asserts, and
killing the harness cannot make a test pass: only returning the right plain values can.

Calls are matched by their arguments (``values.key``) and, for equal arguments, in order: a
function with state (a counter) replays its successive results. When a call changed its
arguments (sorting a list in place), the parent's stub applies the recorded new state to the
test's objects. Program state a test asserts on (``assert calls == 2`` where ``calls`` is a
global of the program) is recorded at each such assert, after the assert's own calls, and set
in the replay's globals just before the parent runs that assert. What is not replayed: methods
called on the program's objects in the parent (the copies have none; use ``calls`` tests).
"""
from __future__ import annotations

import ast
import collections
import random
import sys
from typing import Any, Callable

from reasoner.verifiers.code import extract, values


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


def _state_call(names: list[str]) -> ast.stmt:
    return ast.Expr(ast.Call(ast.Name("__state__", ast.Load()), [ast.List([ast.Constant(n) for n in names], ast.Load())], []))


def _names_in(node: ast.AST, state: set[str]) -> list[str]:
    return sorted({n.id for n in ast.walk(node) if isinstance(n, ast.Name) and n.id in state})


class _Strip(ast.NodeTransformer):
    def __init__(self, targets: set[str], state: set[str]):
        self.targets, self.state = targets, state

    def visit_Assert(self, node: ast.Assert) -> list[ast.stmt]:
        body = [ast.Expr(c) for c in _outer_calls(node.test, self.targets)] or [ast.Pass()]
        handler = ast.ExceptHandler(type=ast.Name("Exception", ast.Load()), name=None, body=[ast.Pass()])
        out: list[ast.stmt] = [ast.Try(body=[s], handlers=[handler], orelse=[], finalbody=[]) for s in body]
        names = _names_in(node.test, self.state)
        return out + ([_state_call(names)] if names else [])


class _LoadState(ast.NodeTransformer):
    """Parent side: ``assert __state__([...]) or <test>`` for each assert that reads program
    state (``__state__`` sets the recorded values and returns None), so it stays one test."""

    def __init__(self, state: set[str]):
        self.state = state

    def visit_Assert(self, node: ast.Assert) -> ast.stmt:
        names = _names_in(node.test, self.state)
        if names:
            node.test = ast.BoolOp(ast.Or(), [_state_call(names).value, node.test])
        return node


def strip(test: str, targets: set[str], state: set[str] = frozenset()) -> str:
    """The test with each assert reduced to its calls of ``targets`` (no expected values),
    then a record of the ``state`` globals it reads."""
    tree = _Strip(targets, set(state)).visit(extract.parse(test))
    return ast.unparse(ast.fix_missing_locations(tree))


def targets_for(test: str, program_names: set[str], extra: tuple[str, ...] = ()) -> set[str]:
    return (_called_names(extract.parse(test)) & program_names) | set(extra)


def _bound_names(tree: ast.AST) -> set[str]:
    out = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and not isinstance(n.ctx, ast.Load)}
    for n in ast.walk(tree):
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            out.add(n.name)
        elif isinstance(n, ast.arg):
            out.add(n.arg)
        elif isinstance(n, (ast.Import, ast.ImportFrom)):
            out |= {(a.asname or a.name).split(".")[0] for a in n.names}
    return out


def state_for(test: str, program: ast.Module, targets: set[str]) -> set[str]:
    """Program globals (variables, not functions or classes) that the test's asserts read and
    never binds itself: recorded in the sandbox at each assert, set in the replay."""
    names: set[str] = set()
    for node in program.body:
        if isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            names |= {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
    names |= {g for n in ast.walk(program) if isinstance(n, ast.Global) for g in n.names}
    tree = extract.parse(test)
    read = {n.id for a in ast.walk(tree) if isinstance(a, ast.Assert) for n in ast.walk(a.test) if isinstance(n, ast.Name)}
    return (read & names) - targets - _bound_names(tree)


class Recorded:
    """What the sandbox sent: calls by (name, args key), in order, and program state by name."""

    def __init__(self, lines: list[dict]):
        self.calls: dict[tuple[str, str], list[dict]] = {}
        self.state: dict[str, list[dict]] = {}
        self._seen: dict[Any, int] = {}
        for rec in lines:
            if isinstance(rec.get("rec"), str) and isinstance(rec.get("key"), str):
                self.calls.setdefault((rec["rec"], rec["key"]), []).append(rec)
            elif isinstance(rec.get("state"), str):
                self.state.setdefault(rec["state"], []).append(rec)

    def next(self, table: dict, k: Any) -> dict | None:
        """The next record for ``k`` (the last one again once all were used)."""
        recs = table.get(k)
        if not recs:
            return None
        i = self._seen.get((id(table), k), 0)
        self._seen[(id(table), k)] = i + 1
        return recs[min(i, len(recs) - 1)]


def recorded(lines: list[dict]) -> Recorded:
    return Recorded(lines)


def _apply(target: Any, new: Any) -> None:
    """Give ``target`` (a test's object passed to the program) the state the call left it in."""
    t = type(target)
    if t in (list, bytearray) and type(new) is t:
        target[:] = new
    elif isinstance(target, collections.deque) and isinstance(new, collections.deque):
        target.clear()
        target.extend(new)
    elif isinstance(target, (dict, set)) and isinstance(new, type(target)):
        target.clear()
        target.update(new)
    elif isinstance(new, values.Obj) and (type(target) is values.Obj or hasattr(target, "__dict__")):
        for k, v in new._obj_attrs.items():
            setattr(target, k, v)


def _apply_post(post: Any, args: tuple, kwargs: dict) -> None:
    pos, kw = post
    for target, new in zip(args, pos):
        _apply(target, values.dec(new))
    for k, new in kw:
        if k in kwargs:
            _apply(kwargs[k], values.dec(new))


def _stub(name: str, rec_: Recorded) -> Callable:
    def stub(*args: Any, **kwargs: Any) -> Any:
        rec = rec_.next(rec_.calls, (name, values.key(args, kwargs)))
        if rec is None:
            raise ReplayMismatch(f"{name} was not run on these arguments")
        if "error" in rec:
            raise ReplayMismatch(f"{name} raised {rec['error']}")
        if "post" in rec:
            _apply_post(rec["post"], args, kwargs)
        try:
            return values.dec(rec["value"])
        except values.Unsupported as e:
            raise ReplayMismatch(f"{name} returned {e}") from None
    return stub


def _state_loader(rec_: Recorded, ns: dict) -> Callable:
    def load(names: list[str]) -> None:
        for n in names:
            rec = rec_.next(rec_.state, n)
            if rec is None or "error" in rec:
                raise ReplayMismatch(f"program state {n!r} was not recorded" + (f": {rec['error']}" if rec else ""))
            try:
                ns[n] = values.dec(rec["value"])
            except values.Unsupported as e:
                raise ReplayMismatch(f"program state {n!r} is {e}") from None
    return load


def safe_imports(program: str) -> str:
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
        code = extract.parse(f"try:\n    pass\nexcept Exception as _e:\n    __fail__({k}, _e)\nelse:\n    __pass__({k})").body[0]
        code.body = [s]
        out.append(code)
        k += 1
    return out, k


def instrument(test: str, check_fn: str | None, state: set[str] = frozenset()) -> tuple[str, int]:
    """The test with per-assert reporting; inside ``check_fn`` when given, else top level."""
    tree = _LoadState(set(state)).visit(extract.parse(test))
    n = 0
    if check_fn is None:
        tree.body, n = _wrap_tests(tree.body, 0)
    else:
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and node.name == check_fn:
                node.body, n = _wrap_tests(node.body, 0)
    return ast.unparse(ast.fix_missing_locations(tree)), n


def replay(test: str, setup: str, program: str, names: set[str], table: Recorded,
           entry_point: str | None, state: set[str] = frozenset()) -> list[str | None]:
    """Run the original test against recorded values; per test: None (pass) or why it failed."""
    src, n = instrument(test, "check" if entry_point else None, state)
    results: list[str | None] = ["not reached"] * n

    def passed(i: int) -> None:
        results[i] = None

    def failed(i: int, e: BaseException) -> None:
        results[i] = f"{type(e).__name__}: {e}"[:200] if str(e) else type(e).__name__

    ns: dict[str, Any] = {"__name__": "__replay__", "__pass__": passed, "__fail__": failed}
    exec(safe_imports(program), ns)
    ns.update({nm: _stub(nm, table) for nm in names})
    ns["__state__"] = _state_loader(table, ns)
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
