"""Exact rational arithmetic on a normalised answer, without recursion or sympy.

``evaluate("\\frac{\\frac{5}{1}}{1}")``, ``evaluate("1+1+...+1")``, ``evaluate("((((3))))")`` and
``evaluate("10^{20}+1")`` give exact ``Fraction`` values; anything else (a symbol, a root, a huge
power) gives None and is left to sympy. Linear in the input (an explicit operator stack), so
thousands of brackets or terms cost microseconds per character; every intermediate value is
size-capped so a power tower cannot stall the caller.
"""
from __future__ import annotations

import re
from fractions import Fraction

MAX_CHARS = 20_000
MAX_BITS = 4096  # numerator/denominator size of any intermediate value
MAX_EXP = 4096

_TOKEN = re.compile(
    r"(?P<mixed>(?<![\d.])\d+\\frac\{\d+\}\{\d+\})"
    r"|(?P<num>\d+\.?\d*|\.\d+)"
    r"|(?P<frac>\\frac\{)"
    r"|(?P<op>\\cdot|\\times|\\div|[-+*/^])"
    r"|(?P<open>[(\[{])|(?P<close>[)\]}])"
)
_PREC = {"+": 1, "-": 1, "*": 2, "/": 2, "neg": 3, "^": 4}
_OPS = {"\\cdot": "*", "\\times": "*", "\\div": "/"}


class _Fail(Exception):
    pass


def _tokens(s: str):
    """Tokens with ``\\frac{a}{b}`` rewritten as ``((a)/(b))`` by a brace stack."""
    stack: list[str] = []  # "grp", "num" (first \frac arg), "den" (second)
    pos, n = 0, len(s)
    while pos < n:
        m = _TOKEN.match(s, pos)
        if not m:
            raise _Fail
        pos = m.end()
        kind = m.lastgroup
        if kind == "mixed":
            w, rest = m.group(0).split("\\frac", 1)
            a, b = rest[1:-1].split("}{")
            if int(b) == 0:
                raise _Fail
            yield "val", int(w) + Fraction(int(a), int(b))
        elif kind == "num":
            yield "val", Fraction(m.group(0))
        elif kind == "frac":
            stack.append("num")
            yield "open", "("
            yield "open", "("
        elif kind == "op":
            yield "op", _OPS.get(m.group(0), m.group(0))
        elif kind == "open":
            stack.append("grp")
            yield "open", "("
        else:
            if not stack:
                raise _Fail
            top = stack.pop()
            if top == "num":
                if not s.startswith("{", pos):
                    raise _Fail
                pos += 1
                stack.append("den")
                yield "close", ")"
                yield "op", "/"
                yield "open", "("
            elif top == "den":
                yield "close", ")"
                yield "close", ")"
            else:
                yield "close", ")"
    if stack:
        raise _Fail


def _check(v: Fraction) -> Fraction:
    if v.numerator.bit_length() > MAX_BITS or v.denominator.bit_length() > MAX_BITS:
        raise _Fail
    return v


def _power(a: Fraction, b: Fraction) -> Fraction:
    if b.denominator != 1 or abs(b.numerator) > MAX_EXP:
        raise _Fail
    e = b.numerator
    size = max(a.numerator.bit_length(), a.denominator.bit_length()) * abs(e)
    if size > MAX_BITS or (a == 0 and e < 0):
        raise _Fail
    return a ** e


def _apply(op: str, vals: list[Fraction]) -> None:
    if op == "neg":
        if not vals:
            raise _Fail
        vals.append(-vals.pop())
        return
    if len(vals) < 2:
        raise _Fail
    b, a = vals.pop(), vals.pop()
    if op == "+":
        r = a + b
    elif op == "-":
        r = a - b
    elif op == "*":
        r = a * b
    elif op == "/":
        if b == 0:
            raise _Fail
        r = a / b
    else:
        r = _power(a, b)
    vals.append(_check(r))


def _push_op(op: str, ops: list[str], vals: list[Fraction]) -> None:
    right = op in ("^", "neg")
    while ops and ops[-1] != "(" and (_PREC[ops[-1]] > _PREC[op] or (_PREC[ops[-1]] == _PREC[op] and not right)):
        _apply(ops.pop(), vals)
    ops.append(op)


def _run(s: str) -> Fraction:
    vals: list[Fraction] = []
    ops: list[str] = []
    prev = "start"  # kind of the previous token: start | val | op | open | close
    for kind, tok in _tokens(s):
        if kind in ("val", "open") and prev in ("val", "close"):
            _push_op("*", ops, vals)  # implicit product: 2(3), (1)(2)
        if kind == "val":
            vals.append(tok)
        elif kind == "open":
            ops.append("(")
        elif kind == "close":
            while ops and ops[-1] != "(":
                _apply(ops.pop(), vals)
            if not ops or prev in ("op", "open"):
                raise _Fail
            ops.pop()
        else:
            if prev in ("start", "op", "open"):
                if tok not in "+-":
                    raise _Fail
                if tok == "-":
                    ops.append("neg")  # unary: binds to what follows, pops nothing
                kind = "op"
                prev = kind
                continue
            _push_op(tok, ops, vals)
        prev = kind
    if prev in ("op", "open", "start"):
        raise _Fail
    while ops:
        op = ops.pop()
        if op == "(":
            raise _Fail
        _apply(op, vals)
    if len(vals) != 1:
        raise _Fail
    return vals[0]


def evaluate(s: str) -> Fraction | None:
    """The exact value of a rational arithmetic expression, or None when ``s`` is not one."""
    if not s or len(s) > MAX_CHARS or not any(c.isdigit() for c in s):
        return None
    try:
        return _run(s)
    except (_Fail, ValueError, ZeroDivisionError, OverflowError):
        return None
