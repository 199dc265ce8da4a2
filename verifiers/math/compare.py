"""Structural comparison of two normalised answers.

An answer is parsed into a small tree (choice letter, union of intervals, set, tuple/interval,
matrix, unordered list, equation, hedge, leaf). Trees are compared structurally; leaves go to a
*leaf function* returning True, False or None (undecided). In-process the leaf function only
knows exact numbers and strings (fast, bounded); in a worker process it also calls sympy.
"""
from __future__ import annotations

import functools
import re
from itertools import permutations
from typing import Callable, NamedTuple, Optional

from reasoner.verifiers.math.normalize import Norm
from reasoner.verifiers.math.realsets import same_real_set
from reasoner.verifiers.math.arith import evaluate
from reasoner.verifiers.math.numbers import Num, numbers_equal, parse_base, parse_number

Tri = Optional[bool]  # True, False, or None = undecided without symbolic maths
LeafFn = Callable[[str, str, bool, bool], Tri]

MAX_ITEMS = 64  # elements of a set/list/tuple; beyond that an answer is not compared
MAX_PERM = 7  # unordered lists up to this size are matched by brute force on undecided leaves


class Node(NamedTuple):
    kind: str  # choice|union|set|group|matrix|list|eq|hedge|leaf
    items: tuple  # children (Nodes) or, for leaves, (text,)
    open: str = ""  # group brackets, e.g. "(" and "]"
    close: str = ""


_OPEN = {"(": ")", "[": "]", "{": "}"}
_CHOICE = re.compile(r"\(?([A-E])\)?(?:[:.)]|$)")
_CHOICE_VALUE = re.compile(r"\(([A-E])\)(?![a-zA-Z]).*|([A-E])[:.](?![a-zA-Z]).+", re.S)  # "(B) 12", "B: 12"
_MATRIX = re.compile(r"(?P<c>.*?)(?P<l>[(\[]?)\\begin\{(?P<e>[a-zA-Z]*matrix|array)\}(?:\{[^{}]*\})?(?P<b>.*)"
                     r"\\end\{(?P=e)\}(?P<r>[)\]]?)", re.S)
_WORDS = re.compile(r"[A-Za-z]{2,}(?: [A-Za-z]+)*")
_VAR = r"[a-zA-Z]"
_SIMPLE_LHS = r"[a-zA-Z](?:_\{?\w+\}?)?|[a-zA-Z]\([a-zA-Z]\)"
_REL = re.compile(r"(\\leq|\\geq|<|>|\\lt|\\gt)")


def split_top(s: str, sep: str) -> list[str]:
    """Split on ``sep`` outside (), [], {}, \\{\\} (separator may be a command like ``\\cup``)."""
    parts, depth, start, i = [], 0, 0, 0
    while i < len(s):
        c = s[i]
        if s.startswith(sep, i) and depth == 0 and (not sep[-1].isalpha() or not s[i + len(sep):i + len(sep) + 1].isalpha()):
            parts.append(s[start:i])
            i += len(sep)
            start = i
            continue
        if c == "\\" and i + 1 < len(s) and s[i + 1] in "{}":
            depth += 1 if s[i + 1] == "{" else -1
            i += 2
            continue
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        i += 1
    parts.append(s[start:])
    return parts


def _wrapped(s: str, left: str, right: str) -> bool:
    """True when ``s`` is ``left ... right`` and the left bracket closes only at the very end."""
    if not (s.startswith(left) and s.endswith(right)) or len(s) < len(left) + len(right):
        return False
    inner = s[len(left):len(s) - len(right)]
    depth = 0
    for c in inner.replace("\\{", "(").replace("\\}", ")"):
        depth += c in "([{"
        depth -= c in ")]}"
        if depth < 0:
            return False
    return depth == 0


def _inequality(s: str) -> Node | None:
    """``a<x<b``, ``x\\geq 3`` ... -> an interval group; None if ``s`` is not one."""
    parts = _REL.split(s)
    if len(parts) not in (3, 5):
        return None
    terms, ops = [t.strip() for t in parts[::2]], parts[1::2]
    lt = [op in ("<", "\\leq", "\\lt") for op in ops]
    if len(set(lt)) != 1:
        return None
    if not lt[0]:
        terms, ops = terms[::-1], ops[::-1]
    strict = [op in ("<", ">", "\\lt", "\\gt") for op in ops]
    if len(terms) == 3:
        if not re.fullmatch(_VAR, terms[1]):
            return None
        lo, hi = terms[0], terms[2]
        return Node("group", (leaf(lo), leaf(hi)), "(" if strict[0] else "[", ")" if strict[1] else "]")
    if re.fullmatch(_VAR, terms[0]):  # x < b
        return Node("group", (leaf("-\\infty"), leaf(terms[1])), "(", ")" if strict[0] else "]")
    if re.fullmatch(_VAR, terms[1]):  # a < x
        return Node("group", (leaf(terms[0]), leaf("\\infty")), "(" if strict[0] else "[", ")")
    return None


def leaf(s: str) -> Node:
    return Node("leaf", (s,))


def parse(s: str, *, top: bool = True) -> Node:
    """The answer tree of one normalised answer string."""
    if top and (m := _CHOICE.fullmatch(s)):
        return Node("choice", (m.group(1),))
    ors = split_top(s, "\\lor")
    if len(ors) > 1:
        ivs = [_inequality(p) for p in ors]
        return Node("union", tuple(ivs)) if all(ivs) else Node("hedge", tuple(ors))
    cups = split_top(s, "\\cup")
    if len(cups) > 1:
        return Node("union", tuple(parse(p, top=False) for p in cups))
    if _wrapped(s, "\\{", "\\}"):
        return Node("set", tuple(parse(p, top=False) for p in split_top(s[2:-2], ",")[:MAX_ITEMS + 1]))
    if "\\begin{" in s and (mat := _matrix(s)) is not None:
        return mat
    diff = split_top(s, "\\setminus")
    if len(diff) == 2 and diff[0] and diff[1]:
        return Node("setminus", (parse(diff[0], top=False), parse(diff[1], top=False)))
    for left, right in (("(", ")"), ("[", "]"), ("(", "]"), ("[", ")"), ("\\langle", "\\rangle")):
        if _wrapped(s, left, right):
            inner = split_top(s[len(left):-len(right)], ",")
            if len(inner) > 1:
                return Node("group", tuple(parse(p, top=False) for p in inner[:MAX_ITEMS + 1]), left[-1], right[-1])
    items = split_top(s, ",")
    if len(items) > 1:
        return _list(items[:MAX_ITEMS + 1])
    iv = _inequality(s)
    if iv is not None:
        return iv
    pm = split_top(s, "\\pm")
    if len(pm) == 2 and pm[1] and len(split_top(pm[0], "=")) == 1:  # "x = 2 \pm 1" is a labelled +-
        a = pm[0] or "0"
        return Node("list", (leaf(f"{a}+{pm[1]}"), leaf(f"{a}-{pm[1]}")))
    eq = split_top(s, "=")
    if len(eq) >= 2 and all(eq) and not re.search(r"[<>]|\\[lg]eq", s):
        return Node("eq", tuple(leaf(x.strip()) for x in eq))
    return leaf(s)


def _list(items: list[str]) -> Node:
    """An unordered list. A label on its first item names the whole list (``x = 1, 2``), and a
    +- item stands for its two values (``\\pm 2, \\pm i`` is four roots)."""
    first = split_top(items[0], "=")
    if len(first) == 2 and re.fullmatch(_SIMPLE_LHS, first[0].strip()) and first[1].strip() \
            and not any(len(split_top(x, "=")) > 1 for x in items[1:]):
        items = [first[1].strip(), *items[1:]]
    nodes = (parse(x, top=False) for x in items)
    flat = tuple(y for n in nodes for y in (n.items if n.kind == "list" else (n,)))
    return Node("list", flat[:MAX_ITEMS + 1])


def _matrix(s: str) -> Node | None:
    """Any matrix environment, optional outer brackets (``\\left[...\\right]``), an optional scalar
    factor in front (``\\frac12\\begin{pmatrix}...``) multiplied into every entry."""
    m = _MATRIX.fullmatch(s)
    if not m or bool(m.group("l")) != bool(m.group("r")):
        return None
    c = re.sub(r"(?:\\cdot|\\times|\*)$", "", m.group("c"))
    entry = (lambda x: leaf(x)) if not c else (lambda x: leaf("{" + c + "}\\cdot{" + x + "}"))
    rows = [r for r in m.group("b").split("\\cr") if r.strip()]
    if len(rows) > MAX_ITEMS:
        return None
    return Node("matrix", tuple(Node("group", tuple(entry(x.strip()) for x in r.split("&")), "(", ")") for r in rows))


def _words_equal(a: str, b: str) -> Tri:
    """Words of two or more letters compare without case (``Yes`` = ``yes``)."""
    if not (_WORDS.fullmatch(a) and _WORDS.fullmatch(b)):
        return None
    return a.lower() == b.lower()


def fast_leaf(a: str, b: str, pct_a: bool, pct_b: bool) -> Tri:
    """Leaf equality without sympy: equal strings, exact numbers and exact rational arithmetic,
    base-n literals, words; else None (undecided)."""
    if a == b and pct_a == pct_b:
        return True
    na, nb = parse_number(a), parse_number(b)
    va = na.value if na is not None else evaluate(a)
    vb = nb.value if nb is not None else evaluate(b)
    if va is not None and vb is not None:
        return numbers_equal(Num(va, None, 0), Num(vb, None, 0), pct_a, pct_b)
    ba, bb = parse_base(a), parse_base(b)
    if ba or bb:
        if ba and bb:
            return ba == bb
        lit, other = (ba, b) if ba else (bb, a)
        return bool(re.fullmatch(r"[0-9A-Za-z]+", other)) and other.upper() == lit.digits
    if a == b:
        return True
    if not a or not b:
        return False
    return _words_equal(a, b)


def _all(results) -> Tri:
    out: Tri = True
    for r in results:
        if r is False:
            return False
        if r is None:
            out = None
    return out


def _ordered(xs: tuple, ys: tuple, f) -> Tri:
    if len(xs) != len(ys) or len(xs) > MAX_ITEMS:
        return False
    return _all(f(x, y) for x, y in zip(xs, ys))


def _unordered(xs: tuple, ys: tuple, f) -> Tri:
    """Multiset equality; undecided pairs are resolved by trying matchings (small sizes only)."""
    if len(xs) != len(ys) or len(xs) > MAX_ITEMS:
        return False
    table = [[f(x, y) for y in ys] for x in xs]
    free, used = list(range(len(ys))), set()
    for row in table:  # greedy on decided-True pairs first
        j = next((j for j in free if row[j] is True and j not in used), None)
        if j is None:
            break
        used.add(j)
    else:
        return True
    if any(all(v is False for v in row) for row in table):
        return False
    if len(xs) > MAX_PERM:
        return None
    best: Tri = False
    for perm in permutations(range(len(ys))):
        r = _all(table[i][j] for i, j in enumerate(perm))
        if r:
            return True
        if r is None:
            best = None
    return best


def _dedup(n: Node) -> Node:
    """A list or set naming the same item twice (a repeated root) is the list of distinct items."""
    if n.kind not in ("list", "set"):
        return n
    items = tuple(dict.fromkeys(n.items))
    return items[0] if len(items) == 1 and n.kind == "list" else n._replace(items=items)


def _choice(p: Node, g: Node) -> Tri:
    """A choice letter against a choice letter, or against a letter given with its value (``(B) 12``)."""
    if p.kind == "choice" and g.kind == "choice":
        return p.items == g.items
    c, o = (p, g) if p.kind == "choice" else (g, p)
    if o.kind != "leaf":
        return False
    m = _CHOICE_VALUE.fullmatch(o.items[0])
    return bool(m) and (m.group(1) or m.group(2)) == c.items[0]


def _eq(p: Node, g: Node, rec) -> Tri:
    if p.kind == "eq" and g.kind == "eq":
        if len(p.items) != 2 or len(g.items) != 2:
            return rec(parse(p.items[-1].items[0], top=False), parse(g.items[-1].items[0], top=False))
        direct = _all([rec(p.items[0], g.items[0]), rec(p.items[1], g.items[1])])
        if direct is not False:
            return direct
        return _all([rec(p.items[0], g.items[1]), rec(p.items[1], g.items[0])])
    if p.kind == "eq":  # "x=5", "m+n=11", "25+25=50", "(a,b)=(4,-7)": the value after the last "="
        return rec(parse(p.items[-1].items[0], top=False), g)
    if len(g.items) == 2 and re.fullmatch(_SIMPLE_LHS, g.items[0].items[0]):  # gold "y=2x+1", answer "2x+1"
        return rec(p, parse(g.items[1].items[0], top=False))
    return False  # the gold is a relation (x+y=5) and the prediction only a value


def _structures(p: Node, g: Node, rec) -> Tri:
    if p.kind in ("set", "list") and g.kind in ("set", "list"):
        return _unordered(p.items, g.items, rec)
    if p.kind == "group" and g.kind == "group":
        if (p.open, p.close) != (g.open, g.close):
            return False
        return _ordered(p.items, g.items, rec)
    if {p.kind, g.kind} == {"group", "list"} and "(" in (p.open + g.open):
        return _ordered(p.items, g.items, rec)  # "1, 2" against the pair (1, 2)
    if p.kind == "matrix" and g.kind == "matrix":
        return _ordered(p.items, g.items, lambda x, y: _ordered(x.items, y.items, rec))
    if {p.kind, g.kind} == {"matrix", "group"}:  # a column or row vector written as a tuple
        m, t = (p, g) if p.kind == "matrix" else (g, p)
        if t.open != "(":
            return False
        flat = m.items[0].items if len(m.items) == 1 else tuple(r.items[0] for r in m.items if len(r.items) == 1)
        return _ordered(flat, t.items, rec) if len(flat) == len(m.items) or len(m.items) == 1 else False
    return False


def compare_nodes(p: Node, g: Node, f: LeafFn, pct: tuple[bool, bool] = (False, False)) -> Tri:
    """Is prediction tree ``p`` the same answer as gold tree ``g``?"""
    rec = lambda x, y: compare_nodes(x, y, f, pct)  # noqa: E731
    p, g = _dedup(p), _dedup(g)
    if p.kind == "hedge" or g.kind == "hedge":
        return False
    if g.kind == "choice" or p.kind == "choice":
        return _choice(p, g)
    if "setminus" in (p.kind, g.kind) or {p.kind, g.kind} == {"union", "group"}:
        r = same_real_set(p, g)
        if r is not None:
            return r
    if p.kind == "union" and g.kind == "union":
        return _unordered(p.items, g.items, rec)
    if p.kind == "union" or g.kind == "union":  # a single interval against a union of one
        u, o = (p, g) if p.kind == "union" else (g, p)
        return rec(u.items[0], o) if len(u.items) == 1 else False
    if p.kind == "eq" or g.kind == "eq":
        return _eq(p, g, rec)
    if p.kind == "leaf" and g.kind == "leaf":
        return f(p.items[0], g.items[0], pct[0], pct[1])
    return _structures(p, g, rec)


@functools.lru_cache(maxsize=8192)  # pure; a group's G answers often repeat, and its gold always does
def compare(pred: Norm, gold: Norm, f: LeafFn = fast_leaf) -> Tri:
    if not pred.text:
        return False
    return compare_nodes(parse(pred.text), parse(gold.text), f, (pred.percent, gold.percent))
