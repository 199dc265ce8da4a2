"""Exact numbers out of normalised answers: ints, decimals, repeating decimals, fractions,
mixed numbers, scientific notation, base-n literals. Pure Python, size-capped, no sympy."""
from __future__ import annotations

import re
from fractions import Fraction
from typing import NamedTuple

MAX_NUMBER_CHARS = 120
MAX_EXPONENT = 400

_INT = r"[+-]?\d+"
_DEC = r"[+-]?(?:\d+\.?\d*|\.\d+)"
_RE_DEC = re.compile(rf"({_DEC})(?:(?:\\times|\\cdot|\*|x)10\^\{{?([+-]?\d+)\}}?|[eE]([+-]?\d+))?")
_RE_REPEAT = re.compile(r"([+-]?)(\d*)\.(\d*)(?:\\overline\{(\d+)\}|\\dot\{(\d)\}|\((\d+)\)|(\d)\.\.\.|(\d)\\ldots)")
_RE_FRAC = re.compile(r"([+-]?)\\frac\{([+-]?[\d.]+)\}\{([+-]?[\d.]+)\}")
_RE_SLASH = re.compile(rf"({_DEC})/({_DEC})")
_RE_MIXED = re.compile(r"([+-]?)(\d+)\\frac\{(\d+)\}\{(\d+)\}")
_RE_BASE = re.compile(r"([0-9A-Za-z]+)_\{?(\d+)\}?")


class Num(NamedTuple):
    value: Fraction
    places: int | None  # decimal places when written as a finite decimal, else None (exact)
    sig: int  # significant digits written (for decimals)


class BaseLit(NamedTuple):
    digits: str
    base: int


def _full(rx: re.Pattern, s: str):
    m = rx.fullmatch(s)
    return m


def _decimal(s: str) -> Num | None:
    m = _full(_RE_DEC, s)
    if not m:
        return None
    mant, exp = m.group(1), m.group(2) or m.group(3)
    if exp is not None and abs(int(exp)) > MAX_EXPONENT:
        return None
    try:
        v = Fraction(mant)
    except (ValueError, ZeroDivisionError):
        return None
    digits = mant.lstrip("+-").replace(".", "").lstrip("0") or "0"
    places = len(mant.split(".", 1)[1]) if "." in mant else None
    if exp is not None:
        v *= Fraction(10) ** int(exp)
        places = None if places is None else max(places - int(exp), 0)
    if places == 0 and "." in mant:
        places = None  # "27." or "27.0"-like with no fractional digits is exact
    if places is not None and v.denominator == 1 and mant.split(".", 1)[1].strip("0") == "":
        places = None  # 27.0 and 27.00 are the integer 27
    return Num(v, places, len(digits))


def _repeating(s: str) -> Num | None:
    m = _full(_RE_REPEAT, s)
    if not m:
        return None
    sign, whole, fixed = m.group(1), m.group(2) or "0", m.group(3)
    rep = next(g for g in m.groups()[3:] if g is not None)
    if m.group(7) or m.group(8):  # "0.333..." repeats its last digit; that digit is in `fixed`
        fixed = fixed + rep
        fixed, rep = fixed[:-1], fixed[-1]
    base = Fraction(int(whole + fixed), 10 ** len(fixed)) if fixed else Fraction(int(whole))
    v = base + Fraction(int(rep), (10 ** len(rep) - 1) * 10 ** len(fixed))
    return Num(-v if sign == "-" else v, None, 0)


def _fraction(s: str) -> Num | None:
    m = _full(_RE_MIXED, s)
    if m:
        v = int(m.group(2)) + Fraction(int(m.group(3)), int(m.group(4)) or 1)
        return Num(-v if m.group(1) == "-" else v, None, 0) if int(m.group(4)) else None
    m = _full(_RE_FRAC, s) or _full(_RE_SLASH, s)
    if not m:
        return None
    sign, p, q = (m.group(1), m.group(2), m.group(3)) if m.re is _RE_FRAC else ("", m.group(1), m.group(2))
    try:
        v = Fraction(p) / Fraction(q)
    except (ValueError, ZeroDivisionError):
        return None
    return Num(-v if sign == "-" else v, None, 0)


def parse_number(s: str) -> Num | None:
    """An exact number if ``s`` (already normalised, no spaces) is one, else None."""
    if not s or len(s) > MAX_NUMBER_CHARS:
        return None
    if s.startswith("(") and s.endswith(")") and "," not in s:
        s = s[1:-1]
    s = re.sub(r"^([+-]?)\{(.*)\}$", r"\1\2", s)
    s = s.replace("--", "+") if s.startswith("--") else s
    for f in (_decimal, _repeating, _fraction):
        n = f(s)
        if n is not None:
            return n
    if s.startswith("-") and s[1:].startswith("\\frac"):
        n = _fraction(s[1:])
        return Num(-n.value, None, 0) if n else None
    return None


def parse_base(s: str) -> BaseLit | None:
    m = _full(_RE_BASE, s)
    if not m or not 2 <= int(m.group(2)) <= 36:
        return None
    return BaseLit(m.group(1).upper(), int(m.group(2)))


def rounds_to(exact: float | Fraction, dec: Num) -> bool:
    """True when the finite decimal ``dec`` is ``exact`` rounded to its places, with at
    least 3 significant digits written (so ``3.14`` matches pi but ``0.3`` does not match 1/3)."""
    if dec.places is None or dec.sig < 3:
        return False
    half_ulp = Fraction(1, 2 * 10 ** dec.places)
    return abs(Fraction(exact) - dec.value) <= half_ulp


def numbers_equal(a: Num, b: Num, pct_a: bool = False, pct_b: bool = False) -> bool:
    """Exact equality only (a rounded decimal is not the fraction it rounds: 0.667 != 2/3); a
    percent is read as either x or x/100."""
    if a.value == b.value:
        return True
    if pct_a != pct_b:
        p, o = (a, b) if pct_a else (b, a)
        return p.value / 100 == o.value
    return False


_UNITS_W = {w: i for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
    "sixteen seventeen eighteen nineteen".split())}
_TENS_W = {w: 10 * i for i, w in enumerate("_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()) if i > 1}
_SCALE_W = {"hundred": 100, "thousand": 1000, "million": 10 ** 6, "billion": 10 ** 9}


def words_to_number(s: str) -> str | None:
    """``"twenty-five"`` -> ``"25"``, ``"one hundred"`` -> ``"100"``; None unless ``s`` is only number words."""
    words = re.sub(r"[-\s]+|\band\b", " ", s.strip().lower()).split()
    if not words or len(words) > 12 or any(w not in _UNITS_W and w not in _TENS_W and w not in _SCALE_W for w in words):
        return None
    total, cur, prev = 0, 0, None
    for w in words:
        if w in _SCALE_W:
            if prev is None or prev in _SCALE_W and _SCALE_W[prev] >= _SCALE_W[w]:
                return None
            if w == "hundred":
                cur *= 100
            else:
                total, cur = total + cur * _SCALE_W[w], 0
        else:
            v = _UNITS_W.get(w, _TENS_W.get(w))
            if prev in _UNITS_W or (prev in _TENS_W and w not in _UNITS_W) or (prev in _TENS_W and v >= 10):
                return None  # "six seven", "twenty thirty", "twenty twelve"
            cur += v
        prev = w
    return str(total + cur)
