"""Answer normalisation: LaTeX noise, Unicode, units, currency, percent, degrees -> one canonical string.

Everything here is plain string work, linear in the input, and bounded by ``MAX_ANSWER``
characters, so it runs in-process on the trainer's hot path.
"""
from __future__ import annotations

import functools
import re
from typing import NamedTuple

from reasoner.verifiers.math.numbers import words_to_number

MAX_ANSWER = 20_000  # longer extracted answers are not compared (a verdict of "wrong")

UNICODE = {
    "\u2212": "-", "\u2013": "-", "\u2014": "-", "\u00d7": "\\times ", "\u22c5": "\\cdot ", "\u00b7": "\\cdot ",
    "\u00f7": "/", "\u03c0": "\\pi ", "\u221e": "\\infty ", "\u2264": "\\le ", "\u2265": "\\ge ", "\u2260": "\\ne ",
    "\u222a": "\\cup ", "\u2229": "\\cap ", "\u00b0": "^\\circ", "\u00bd": "\\frac{1}{2}", "\u2153": "\\frac{1}{3}",
    "\u2154": "\\frac{2}{3}", "\u00bc": "\\frac{1}{4}", "\u00be": "\\frac{3}{4}", "\u215b": "\\frac{1}{8}",
    "\u00b2": "^{2}", "\u00b3": "^{3}", "\u00b9": "^{1}", "\u2070": "^{0}", "\u2074": "^{4}", "\u00b1": "\\pm ",
    "\u2205": "\\emptyset ", "\u2208": "\\in ", "\u2216": "\\setminus ", "\u211d": "\\mathbb{R}",
    "\u03b8": "\\theta ", "\u03b1": "\\alpha ", "\u03b2": "\\beta ", "\u2009": " ", "\u00a0": " ", "\u202f": " ",
}
_UNICODE_RE = re.compile("|".join(map(re.escape, UNICODE)))
_SQRT_UNI = re.compile(r"[\u221a]\s*(\d+(?:\.\d+)?|[a-zA-Z]|\{[^{}]*\}|\([^()]*\))")
_CBRT_UNI = re.compile(r"[\u221b]\s*(\d+|[a-zA-Z]|\([^()]*\))")

_DROP = [
    r"\\displaystyle", r"\\left", r"\\right", r"\\bigl", r"\\bigr", r"\\Bigl", r"\\Bigr", r"\\biggl", r"\\biggr",
    r"\\big", r"\\Big", r"\\bigg", r"\\Bigg", r"\\middle", r"\\limits", r"\\nolimits", r"\\quad", r"\\qquad",
    r"\\,", r"\\;", r"\\:", r"\\!", r"\\ ", r"\\>", r"~", r"\\hspace\{[^{}]*\}", r"\\phantom\{[^{}]*\}",
    r"\\mathstrut", r"\\strut", r"\\tiny", r"\\small", r"\\large", r"\\Large",
]
_DROP_RE = re.compile("|".join(p + (r"(?![a-zA-Z])" if p[-1].isalpha() else "") for p in _DROP))
_TEXT_CMD = re.compile(r"\\(?:text|textbf|textit|textrm|textnormal|mathrm|mathbf|mathit|mathsf|mbox|operatorname|rm|bf)\s*\{([^{}]*)\}")
_DEG = re.compile(r"\^\s*\{?\s*\\circ\s*\}?|\\circ|\\degree|\^\s*\{\s*\\text\{\s*o\s*\}\s*\}")
_PERCENT = re.compile(r"\\?%|\s*\bpercent\b")
_CURRENCY = re.compile(r"\\\$|\$|\bUSD\b|\\pounds|\\euro|\u20ac|\u00a3")
_UNITS = (
    r"(?:square|sq\.?|cubic)?\s*(?:units?|cm|mm|km|m|meters?|metres?|centimeters?|kilometers?|inches|inch|in|feet|foot|ft|"
    r"yards?|yd|miles?|mi|mph|km/h|kg|g|grams?|kilograms?|lbs?|pounds?|ounces?|oz|seconds?|secs?|s|minutes?|mins?|"
    r"hours?|hrs?|h|days?|weeks?|months?|years?|dollars?|cents?|degrees?|deg|radians?|rad|liters?|litres?|L|ml|"
    r"gallons?|people|persons?|students?|marbles?|apples?|cookies?|books?|pages?|times|ways|points?|sq|cents)"
)
_UNIT_TAIL = re.compile(r"(?<=[\d}).])\s*(?:" + _UNITS + r"(?:\s*\^\s*\{?[23]\}?)?\.?\s*)+$")
_THOUSANDS = re.compile(r"(?<![\d.])(\d{1,3}(?:,\d{3})+)(?![\d,])")
_FRAC_ARG = r"(\d|\\[a-zA-Z]+|[a-zA-Z](?![a-zA-Z])|\{[^{}]*\})"
_FRAC_SHORT = re.compile(r"\\[dt]?frac\s*" + _FRAC_ARG + r"\s*" + _FRAC_ARG)
_SQRT_SHORT = re.compile(r"\\sqrt\s*(\d+|[a-zA-Z](?![a-zA-Z]))")
_EQ_PREFIX = re.compile(r"^\s*(?:[a-zA-Z](?:_\{?\w+\}?)?|\\[a-zA-Z]+|[a-zA-Z]\([a-zA-Z]\))\s*=(?![=<>])\s*")
_ROW_BREAK = re.compile(r"\\\\(?:\s*\[[^\]]*\])?")  # a matrix row break, with optional spacing [2pt]
_MARKDOWN = re.compile(r"\*\*|__|^#+\s*|^\*|\*$")
_REALS = re.compile(r"\\mathbb\s*\{?\s*R\s*\}?|\\Bbb\s*\{?R\}?|\\R(?![a-zA-Z])|\b(?:the\s+set\s+of\s+)?all\s+real\s+numbers\b"
                    r"|\ball\s+reals\b|\breal\s+numbers\b", re.I)
_EMPTY = re.compile(r"\\(?:emptyset|varnothing|O)(?![a-zA-Z])|\\\{\s*\\\}|\\empty(?![a-zA-Z])")
_IN_PREFIX = re.compile(r"^(?:[a-zA-Z](?:_\{?\w+\}?)?|\\[a-zA-Z]+)\\in(?![a-zA-Z])")
_SET_BUILDER = re.compile(r"^\\\{[a-zA-Z](?:\\in\(-\\infty,\\infty\))?(?:\\mid|\||:)(.+)\\\}$")
_MIXED_PLAIN = re.compile(r"(?<![\d.,/])(\d+)\s+(\d+)\s*/\s*(\d+)(?![\d.])")
_WORD_PREFIX = re.compile(r"^(?:the\s+)?(?:final\s+)?(?:answer|result|solution)\s*(?:is|:)?\s*", re.I)


class Norm(NamedTuple):
    text: str  # canonical LaTeX-ish string, no spaces
    percent: bool  # a percent sign was removed


def fix_sets(s: str) -> str:
    """The reals in any spelling -> ``(-\\infty,\\infty)``; the empty set in any spelling -> ``\\emptyset``."""
    s = _REALS.sub(r"(-\\infty,\\infty)", s)
    return _EMPTY.sub(r"\\emptyset ", s)


def strip_labels(s: str) -> str:
    """``t \\in (0, 3]`` -> ``(0,3]``; ``\\{x | x \\geq 0\\}`` -> ``x\\geq0`` (spaces already gone)."""
    s = _IN_PREFIX.sub("", s)
    m = _SET_BUILDER.match(s)
    return m.group(1) if m else s


def strip_outer_braces(s: str) -> str:
    """``{{{7}}}`` -> ``7`` in one linear pass (matching brace positions from one stack walk)."""
    if not (s.startswith("{") and s.endswith("}")):
        return s
    match, stack = {}, []
    for i, c in enumerate(s):
        if c == "{" and (i == 0 or s[i - 1] != "\\"):
            stack.append(i)
        elif c == "}" and (i == 0 or s[i - 1] != "\\"):
            if not stack:
                return s
            match[stack.pop()] = i
    if stack:
        return s
    lo, hi = 0, len(s) - 1
    while lo < hi and s[lo] == "{" and match.get(lo) == hi:
        lo, hi = lo + 1, hi - 1
    return s[lo:hi + 1]


def unicode_to_latex(s: str) -> str:
    s = _SQRT_UNI.sub(lambda m: "\\sqrt{" + m.group(1).strip("{}()") + "}", s)
    s = _CBRT_UNI.sub(lambda m: "\\sqrt[3]{" + m.group(1).strip("()") + "}", s)
    return _UNICODE_RE.sub(lambda m: UNICODE[m.group(0)], s)


def strip_text_commands(s: str) -> str:
    for _ in range(3):  # \text{\textbf{5}} needs two passes
        new = _TEXT_CMD.sub(lambda m: " " + m.group(1) + " ", s)
        if new == s:
            break
        s = new
    return s


def fix_shorthands(s: str) -> str:
    """``\\dfrac``/``\\tfrac`` -> ``\\frac``; ``\\frac12`` -> ``\\frac{1}{2}``; ``\\sqrt2`` -> ``\\sqrt{2}``."""
    s = re.sub(r"\\[dt]frac(?![a-zA-Z])", r"\\frac", s)
    for _ in range(3):
        new = _FRAC_SHORT.sub(lambda m: "\\frac{" + m.group(1).strip("{}") + "}{" + m.group(2).strip("{}") + "}"
                              if not (m.group(1).startswith("{") and m.group(2).startswith("{"))
                              else "\\frac" + m.group(1) + m.group(2), s)
        if new == s:
            break
        s = new
    return _SQRT_SHORT.sub(lambda m: "\\sqrt{" + m.group(1) + "}", s)


def strip_units(s: str) -> str:
    return _UNIT_TAIL.sub("", s)


def strip_equation_prefix(s: str) -> str:
    """``x = 5`` -> ``5`` when the left side is a lone variable (or ``f(x)``); other equations stay."""
    m = _EQ_PREFIX.match(s)
    if m and s.count("=") == 1 and not re.search(r"[<>]|\\[lg]e", s):
        return s[m.end():]
    return s


@functools.lru_cache(maxsize=8192)  # a pure function of a string; gold answers repeat G times per group
def normalize(s: str) -> Norm:
    """Canonical form of one answer. Raises nothing; bounded by the input length."""
    s = s[:MAX_ANSWER]
    s = _MARKDOWN.sub("", s.strip()).strip()
    s = _ROW_BREAK.sub(" \\\\cr ", s)  # protect matrix row breaks from the spacing commands below
    s = unicode_to_latex(s)
    s = strip_text_commands(s)
    s = _DROP_RE.sub(" ", s)
    s = s.replace("\\(", "").replace("\\)", "").replace("\\[", "").replace("\\]", "")
    s = _DEG.sub("", s)
    s = _CURRENCY.sub("", s)
    pct = bool(_PERCENT.search(s))
    s = _PERCENT.sub("", s)
    s = s.replace("{,}", "").replace("\\dots", "\\ldots").replace("\\cdots", "\\ldots")
    s = _WORD_PREFIX.sub("", s.strip())
    s = s.strip().rstrip(".").strip()
    s = strip_units(s).strip()
    s = words_to_number(s) or s
    s = _MIXED_PLAIN.sub(r"\1\\frac{\2}{\3}", s)
    s = fix_sets(s)
    s = fix_shorthands(s)
    s = _THOUSANDS.sub(lambda m: m.group(1).replace(",", ""), s) if _is_single_number_context(s) else s
    s = s.replace("\\le ", "\\leq ").replace("\\ge ", "\\geq ")
    s = re.sub(r"\\(le|ge)(?![a-zA-Z])", r"\\\1q", s)
    s = re.sub(r"\s*\b(?:or)\b\s*", r"\\lor ", s)
    s = re.sub(r"\s*(?:,\s*)?\band\b\s*", ",", s)
    s = re.sub(r"\s+", " ", s).strip()
    s = re.sub(r"(?<![\\a-zA-Z])\s+|\s+(?![a-zA-Z])", "", s)  # drop spaces except between command and letter
    s = strip_labels(s)
    s = strip_outer_braces(s)
    return Norm(s.rstrip("."), pct)


def _is_single_number_context(s: str) -> bool:
    """Treat ``1,000`` as a thousands separator only where a list of numbers is not plausible."""
    return not re.search(r",\s", s) and not s.startswith(("(", "[", "\\{"))
