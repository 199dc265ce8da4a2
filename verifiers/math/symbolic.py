"""Symbolic leaf equality with sympy. Runs ONLY inside pool worker processes (it can hang on
adversarial input; the pool kills the worker on deadline)."""
from __future__ import annotations

import random
from fractions import Fraction

import sympy
from latex2sympy2_extended import latex2sympy
from latex2sympy2_extended.latex2sympy2 import ConversionConfig
from latex2sympy2_extended.math_normalization import NormalizationConfig

from verifiers.math.compare import Node, Tri, compare, compare_nodes, fast_leaf, leaf
from verifiers.math.normalize import Norm
from verifiers.math.numbers import parse_number, rounds_to

_NORM = NormalizationConfig(basic_latex=True, units=False, malformed_operators=True, nits=False,
                            boxed="none", equations=False)
_CONV = ConversionConfig(interpret_as_mixed_fractions=True, interpret_simple_eq_as_assignment=False,
                         interpret_contains_as_eq=True, lowercase_symbols=False)
_REL_TOL = 1e-9


_I = sympy.Symbol("i")


def to_sympy(s: str):
    """LaTeX -> sympy; a free ``i`` is the imaginary unit (as in every MATH problem)."""
    e = latex2sympy(s, normalization_config=_NORM, conversion_config=_CONV)
    return e.subs(_I, sympy.I) if isinstance(e, sympy.Basic) and _I in e.free_symbols else e


def _close(va, vb) -> bool:
    """Relative closeness of two sympy numbers, computed in arbitrary precision (no overflow)."""
    return bool(abs(va - vb) <= _REL_TOL * sympy.Max(1, abs(va), abs(vb)))


def _numeric_equal(ea, eb, a: str, b: str) -> bool:
    """Both sides free of symbols: a 30-digit numeric comparison (no simplify: too slow)."""
    va, vb = sympy.N(ea, 30), sympy.N(eb, 30)
    if not (va.is_number and vb.is_number) or va.has(sympy.nan) or vb.has(sympy.nan):
        return False
    if va.is_infinite or vb.is_infinite or va.has(sympy.zoo) or vb.has(sympy.zoo):
        return va == vb
    na, nb = parse_number(a), parse_number(b)
    dec = na if na is not None and na.places is not None else nb if nb is not None and nb.places is not None else None
    if dec is not None and va.is_real and vb.is_real:  # "3.14" against pi: the decimal must be the other rounded
        other = vb if dec is na else va
        return rounds_to(Fraction(str(other)), dec)
    return _close(va, vb)


def _random_points_equal(ea, eb, symbols) -> bool:
    rng = random.Random(0)
    tried = 0
    for _ in range(8):
        point = {s: sympy.Rational(rng.randint(-97, 97), rng.randint(1, 13)) for s in symbols}
        try:
            va = complex(sympy.N(ea.subs(point), 20))
            vb = complex(sympy.N(eb.subs(point), 20))
        except (TypeError, ValueError, ZeroDivisionError):
            continue
        tried += 1
        if abs(va - vb) > 1e-8 * max(1.0, abs(va), abs(vb)):
            return False
    return tried >= 3


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
    try:
        if pct_a != pct_b:
            scaled = (ea / 100, eb) if pct_a else (ea, eb / 100)
            if sym_leaf_exprs(*scaled, a, b):
                return True
        return sym_leaf_exprs(ea, eb, a, b)
    except (ArithmeticError, ValueError, TypeError, AttributeError, RecursionError):
        return False  # e.g. a power tower overflowing: certainly not the gold's value


def sym_leaf_exprs(ea, eb, a: str, b: str) -> bool:
    if ea == eb:
        return True
    symbols = ea.free_symbols | eb.free_symbols
    if not symbols:
        return bool(_numeric_equal(ea, eb, a, b))
    return _random_points_equal(ea, eb, symbols)  # 5 random rational points, 20 digits


def _eq_leaf(a: str, b: str, pa: bool, pb: bool) -> Tri:
    return sym_leaf(a, b, pa, pb)


def compare_symbolic(pred: Norm, gold: Norm) -> bool:
    """Full structural comparison with sympy at the leaves; equations also as lhs - rhs."""
    r = compare(pred, gold, _eq_leaf)
    if r:
        return True
    from verifiers.math.compare import parse
    p, g = parse(pred.text), parse(gold.text)
    if p.kind == "eq" and g.kind == "eq":
        dp = leaf(f"({p.items[0].items[0]})-({p.items[1].items[0]})")
        dg = leaf(f"({g.items[0].items[0]})-({g.items[1].items[0]})")
        neg = leaf(f"({g.items[1].items[0]})-({g.items[0].items[0]})")
        return bool(compare_nodes(dp, dg, _eq_leaf) or compare_nodes(dp, neg, _eq_leaf))
    return False


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
