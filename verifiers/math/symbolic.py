"""Symbolic leaf equality with sympy. Runs ONLY inside pool worker processes (it can hang on
adversarial input; the pool kills the worker on deadline)."""
from __future__ import annotations

import functools
import random

import sympy
from latex2sympy2_extended import latex2sympy
from latex2sympy2_extended.latex2sympy2 import ConversionConfig
from latex2sympy2_extended.math_normalization import NormalizationConfig

from reasoner.verifiers.math.compare import Node, Tri, compare, fast_leaf
from reasoner.verifiers.math.normalize import Norm

_NORM = NormalizationConfig(basic_latex=True, units=False, malformed_operators=True, nits=False,
                            boxed="none", equations=False)
_CONV = ConversionConfig(interpret_as_mixed_fractions=True, interpret_simple_eq_as_assignment=False,
                         interpret_contains_as_eq=True, lowercase_symbols=False)


_I = sympy.Symbol("i")


@functools.lru_cache(maxsize=4096)
def to_sympy(s: str):
    """LaTeX -> sympy; a free ``i`` is the imaginary unit (as in every MATH problem)."""
    e = latex2sympy(s, normalization_config=_NORM, conversion_config=_CONV)
    return e.subs(_I, sympy.I) if isinstance(e, sympy.Basic) and _I in e.free_symbols else e


_DIGITS = 60  # working precision of a numeric identity test
_ZERO = sympy.Rational(1, 10 ** 40)  # relative size below which a difference at 60 digits is zero


def exact(e):
    """Every float literal replaced by the exact rational it spells (``0.667`` -> ``667/1000``), so
    a rounded decimal does not equal the irrational or repeating value it approximates, up to the
    tolerances below: one of about 40 significant digits or more still matches a closed form
    (``_numeric_equal``), about 20 inside an expression with variables (``_same``)."""
    if not isinstance(e, sympy.Basic):
        return e
    floats = e.atoms(sympy.Float)
    return e.xreplace({f: _spelled(f) for f in floats}) if floats else e


def _spelled(f):
    """The rational a float literal spells; the float itself past Python's 4300-digit limit on
    int/str conversion (``1e5000``: sympy raises TypeError or ValueError there)."""
    try:
        return sympy.Rational(str(f))
    except (TypeError, ValueError):
        return f


def _is_zero(d, scale) -> bool | None:
    """Is the closed-form number ``d`` zero? Exact for rationals; else ``d`` is evaluated to 60 digits
    and counts as zero when ``|d| <= 10^-40 * max(1, |scale|)``; None when it does not evaluate."""
    if d.is_Rational:
        return d == 0
    v = sympy.N(d, _DIGITS)
    if not v.is_number or v.has(sympy.nan, sympy.zoo):
        return None
    s = sympy.N(scale, _DIGITS)
    return bool(abs(v) <= _ZERO * sympy.Max(1, abs(s)))


def _numeric_equal(ea, eb) -> bool:
    """Both sides free of symbols. An infinity equals only itself; a difference that is rational
    must be 0; any other is evaluated to 60 digits and must be at most
    ``10^-40 * max(1, |ea| + |eb|)`` (equal to about 40 significant digits)."""
    if ea.has(sympy.oo, -sympy.oo, sympy.zoo) or eb.has(sympy.oo, -sympy.oo, sympy.zoo):
        return ea == eb
    return bool(_is_zero(ea - eb, abs(ea) + abs(eb)))


def _values(e, points):
    out = []
    for point in points:
        try:
            v = e.subs(point)
            v = v if v.is_Rational else sympy.N(v, 30)
            out.append(v if v.is_number and not v.has(sympy.nan, sympy.zoo) else None)
        except (TypeError, ValueError, ZeroDivisionError, ArithmeticError):
            out.append(None)
    return out


def _points(symbols, n: int = 8):
    rng = random.Random(0)
    return [{s: sympy.Rational(rng.randint(-97, 97), rng.randint(1, 13)) for s in symbols} for _ in range(n)]


def _same(va, vb) -> bool:
    if va.is_Rational and vb.is_Rational:
        return va == vb
    return bool(abs(va - vb) <= sympy.Float(1e-20) * sympy.Max(1, abs(va), abs(vb)))


def _random_points_equal(ea, eb, symbols) -> bool:
    pairs = [(x, y) for x, y in zip(*(_values(e, _points(symbols)) for e in (ea, eb))) if x is not None and y is not None]
    return len(pairs) >= 3 and all(_same(x, y) for x, y in pairs)


def proportional(da, db) -> bool:
    """``da = c * db`` for one nonzero constant ``c`` (the same relation: ``3x-6y-9`` and ``x-2y-3``)."""
    symbols = sorted(da.free_symbols | db.free_symbols, key=str)
    if not symbols:
        return False
    pairs = [(x, y) for x, y in zip(*(_values(e, _points(symbols, 6)) for e in (da, db))) if x is not None and y is not None]
    ratios = [x / y for x, y in pairs if y != 0 and x != 0]
    if len(pairs) < 4 or len(ratios) < 4 or any((x == 0) != (y == 0) for x, y in pairs):
        return False
    return all(_same(r, ratios[0]) for r in ratios[1:])


def sym_leaf(a: str, b: str, pct_a: bool, pct_b: bool) -> Tri:
    fast = fast_leaf(a, b, pct_a, pct_b)
    if fast is not None:
        return fast
    try:
        ea, eb = to_sympy(a), to_sympy(b)
    except Exception:  # noqa: BLE001 - unparseable LaTeX is simply not equal
        return False
    if not (isinstance(ea, sympy.Expr) and isinstance(eb, sympy.Expr)):
        return ea == eb
    ea, eb = exact(ea), exact(eb)
    try:
        if pct_a != pct_b:
            scaled = (ea / 100, eb) if pct_a else (ea, eb / 100)
            if sym_leaf_exprs(*scaled):
                return True
        return sym_leaf_exprs(ea, eb)
    except (ArithmeticError, ValueError, TypeError, AttributeError, RecursionError):
        return False  # e.g. a power tower overflowing: certainly not the gold's value


def sym_leaf_exprs(ea, eb) -> bool:
    if ea == eb:
        return True
    symbols = ea.free_symbols | eb.free_symbols
    if not symbols:
        return _numeric_equal(ea, eb)
    return _random_points_equal(ea, eb, symbols)  # 8 random rational points; exact if rational, else 1e-20 relative


def _eq_leaf(a: str, b: str, pa: bool, pb: bool) -> Tri:
    return sym_leaf(a, b, pa, pb)


def _difference(n: Node):
    lhs, rhs = n.items[0].items[0], n.items[1].items[0]
    return exact(to_sympy(lhs)) - exact(to_sympy(rhs))


def compare_symbolic(pred: Norm, gold: Norm) -> bool:
    """Full structural comparison with sympy at the leaves; two equations are also the same when
    ``lhs - rhs`` of one is a nonzero constant times that of the other (rearranged or scaled)."""
    from reasoner.verifiers.math.compare import parse
    p, g = parse(pred.text), parse(gold.text)
    if p.kind == "eq" and g.kind == "eq" and len(p.items) == 2 and len(g.items) == 2:
        try:  # one test covers equal sides, swapped sides, moved terms and scaling
            dp, dg = _difference(p), _difference(g)
            if isinstance(dp, sympy.Expr) and isinstance(dg, sympy.Expr) and proportional(dp, dg):
                return True
        except Exception:  # noqa: BLE001 - an unparseable side: try the side-by-side comparison
            pass
    return bool(compare(pred, gold, _eq_leaf))


_WARM = [
    ("\\frac{\\sqrt{2}}{2}", "\\frac{1}{\\sqrt{2}}"), ("(x+1)^2", "x^2+2x+1"), ("x^2+y^2-4=0", "x^2+y^2=4"),
    ("2\\sqrt{3}", "\\sqrt{12}"), ("\\pi", "3.14"), ("\\sin^2x+\\cos^2x", "1"), ("e^{i\\pi}", "-1"),
    ("\\log_2 8", "3"), ("\\frac{a+b}{c}", "\\frac{a}{c}+\\frac{b}{c}"), ("3\\cdot2^{n}", "3\\times2^n"),
    ("\\sqrt[3]{x}", "x^{1/3}"), ("-\\infty", "\\infty"), ("\\binom{5}{2}", "10"), ("5!", "120"),
]


def warmup() -> None:
    """Exercise the ANTLR parser on typical shapes so its prediction caches are filled before the
    first deadline-bound call."""
    for a, b in _WARM:
        compare_symbolic(Norm(a, False), Norm(b, False))


__all__ = ["compare_symbolic", "warmup", "sym_leaf", "to_sympy", "Node"]
