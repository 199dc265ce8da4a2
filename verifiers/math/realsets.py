"""Subsets of the real line with exact endpoints: unions of intervals, finite sets, set differences.

``\\mathbb{R} \\setminus \\{2\\}`` and ``(-\\infty, 2) \\cup (2, \\infty)`` are the same set; this module
turns an answer tree into a canonical sorted list of disjoint intervals so that the two compare
equal. Only exact rational endpoints (and infinities) are handled; anything else gives None and the
ordinary structural comparison applies.
"""
from __future__ import annotations

from fractions import Fraction
from typing import NamedTuple, Optional, Union

from reasoner.verifiers.math.arith import evaluate
from reasoner.verifiers.math.numbers import parse_number

Value = Union[Fraction, float]  # float only for +-inf
MAX_PIECES = 64


class Interval(NamedTuple):
    lo: Value
    lo_closed: bool
    hi: Value
    hi_closed: bool


def _value(text: str) -> Optional[Value]:
    t = text.strip().lstrip("+")
    if t in ("\\infty", "+\\infty", "\\infinity"):
        return float("inf")
    if t == "-\\infty":
        return float("-inf")
    n = parse_number(t)
    return n.value if n is not None else evaluate(t)


def _points(node) -> Optional[list[Value]]:
    items = node.items if node.kind in ("set", "list") else (node,) if node.kind == "leaf" else None
    if items is None or any(i.kind != "leaf" for i in items):
        return None
    vals = [_value(i.items[0]) for i in items]
    return None if any(v is None or isinstance(v, float) for v in vals) else vals


def _remove(ivs: list[Interval], x: Value) -> list[Interval]:
    out = []
    for iv in ivs:
        if not (iv.lo <= x <= iv.hi):
            out.append(iv)
            continue
        if iv.lo < x:
            out.append(Interval(iv.lo, iv.lo_closed, x, False))
        if x < iv.hi:
            out.append(Interval(x, False, iv.hi, iv.hi_closed))
    return out


def intervals(node) -> Optional[list[Interval]]:
    """The set an answer tree describes, as a list of intervals; None when it is not such a set."""
    kind = node.kind
    if kind == "leaf" and node.items[0] == "\\emptyset":
        return []
    if kind == "group" and len(node.items) == 2 and all(i.kind == "leaf" for i in node.items):
        lo, hi = (_value(i.items[0]) for i in node.items)
        if lo is None or hi is None or lo > hi:
            return None
        return [Interval(lo, node.open == "[", hi, node.close == "]")]
    if kind == "union":
        out: list[Interval] = []
        for part in node.items:
            sub = intervals(part)
            if sub is None:
                return None
            out += sub
        return out if len(out) <= MAX_PIECES else None
    if kind == "set":
        pts = _points(node)
        return None if pts is None else [Interval(p, True, p, True) for p in pts]
    if kind == "setminus":
        base, pts = intervals(node.items[0]), _points(node.items[1])
        if base is None or pts is None or len(pts) > MAX_PIECES:
            return None
        for x in pts:
            base = _remove(base, x)
        return base
    return None


def canonical(ivs: list[Interval]) -> list[Interval]:
    """Sorted, with overlapping or touching pieces merged and empty pieces dropped."""
    ivs = sorted((iv for iv in ivs if iv.lo < iv.hi or (iv.lo == iv.hi and iv.lo_closed and iv.hi_closed)),
                 key=lambda iv: (iv.lo, not iv.lo_closed))
    out: list[Interval] = []
    for iv in ivs:
        if out and (out[-1].hi > iv.lo or (out[-1].hi == iv.lo and (out[-1].hi_closed or iv.lo_closed))):
            last = out[-1]
            if iv.hi > last.hi or (iv.hi == last.hi and iv.hi_closed):
                out[-1] = Interval(last.lo, last.lo_closed, iv.hi, iv.hi_closed or (iv.hi == last.hi and last.hi_closed))
            continue
        out.append(iv)
    return out


def same_real_set(p, g) -> Optional[bool]:
    """Do two answer trees describe the same subset of the reals? None when either is not one."""
    a, b = intervals(p), intervals(g)
    if a is None or b is None:
        return None
    return canonical(a) == canonical(b)
