"""Answer extraction: the final answer out of a model response, or out of a dataset's gold field.

All scans are linear (``rfind`` plus one brace walk), so a megabyte response costs
milliseconds. Extraction never compares anything; see ``compare.py`` for that.
"""
from __future__ import annotations

import re

FALLBACKS = ("last_number", "none")
MAX_BOXED = 20_000  # a \boxed{} body longer than this is treated as malformed

_BOX_CMDS = ("\\boxed", "\\fbox", "\\framebox")
_MARKERS = re.compile(
    r"(?:final\s+answer\s*(?:is|:)|the\s+answer\s+is|answer\s*:|####)\s*(?::\s*)?", re.I)
_NUMBER = re.compile(
    r"-?\\[dt]?frac\s*\{\s*-?\d+\s*\}\s*\{\s*\d+\s*\}"  # \frac{3}{4}
    r"|-?\d{1,3}(?:,\d{3})+(?:\.\d+)?(?![\d,]*\d)"  # 1,234,567.5
    r"|-?\d+(?:\.\d+)?(?:\s*/\s*\d+(?:\.\d+)?)?"  # 12, -3.5, 3/4
    r"|-?\.\d+"  # .5
)
_HEDGE_BEFORE = re.compile(r"(?:\d|\})\s*(?:or|and/or|,|/)\s*$|\b(?:either|maybe|perhaps|possibly)\b[^.\n]*$", re.I)
_PROSE_TAIL = re.compile(r",?\s+(?:since|because|as|which|so|given|when|where|for|from)\b|,\s+(?=[a-zA-Z]{3,}\b)")
_TAIL = 4000  # the fallback looks only at the end of the response
_NEGATED = re.compile(r"^\s*not\s+[^,;]*?[,;]?\s+(?:but|it\s+is|it's|rather|instead)\s+", re.I)  # "not 4, but 6"


def strip_think(text: str) -> str:
    """Drop a ``<think>...</think>`` block; an unclosed ``<think>`` means no answer was given."""
    end = text.rfind("</think>")
    if end >= 0:
        return text[end + len("</think>"):]
    if "<think>" in text:
        return ""
    return text


def _brace_body(text: str, start: int) -> str | None:
    """The body of the ``{...}`` group opening at ``text[start]``, or None if unbalanced."""
    depth = 0
    limit = min(len(text), start + MAX_BOXED)
    i = start
    while i < limit:
        c = text[i]
        if c == "\\":
            i += 2
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return text[start + 1:i]
        i += 1
    return None


def last_boxed(text: str) -> str | None:
    """The content of the last ``\\boxed{...}``, ``\\boxed 5`` or ``\\fbox{...}``; None if absent."""
    pos, cmd = max((text.rfind(c), c) for c in _BOX_CMDS)
    while pos >= 0:
        j = pos + len(cmd)
        while j < len(text) and text[j] == " ":
            j += 1
        if j < len(text) and text[j] == "{":
            body = _brace_body(text, j)
            return None if body is None else body.strip()  # an unclosed last box: cut off, no answer
        elif j > pos + len(cmd) and j < len(text):  # "\boxed 5": one token after a space
            m = re.match(r"[^\s$]+", text[j:j + 200])
            if m:
                return m.group(0).rstrip(".")
        pos, cmd = max((text.rfind(c, 0, pos), c) for c in _BOX_CMDS)
    return None


def after_marker(text: str) -> str | None:
    """What follows the last "The answer is" / "Final Answer:" / "####", up to the end of its line."""
    last = None
    for m in _MARKERS.finditer(text[-_TAIL:]):
        last = m
    if last is None:
        return None
    rest = text[-_TAIL:][last.end():].strip().strip("*").strip()
    line = rest.split("\n", 1)[0].strip()
    line = _NEGATED.sub("", line, count=1)
    line = re.split(r"(?<=[^\d\\])\.\s|\.$", line, maxsplit=1)[0]  # end of sentence, not a decimal point
    line = _PROSE_TAIL.split(line, maxsplit=1)[0]
    line = line.strip().strip("$").strip()
    return line.rstrip(".").strip() or None


_WORD = re.compile(r"(?<![\\a-zA-Z])[a-zA-Z]{3,}")
_MATHY = re.compile(r"[\d\\\u221a\u03c0\u00bd\u00bc\u00be\u221e]")


def bare_answer(text: str) -> str | None:
    """A short last line that is all maths (``-5/6``, ``x=7``, ``\\sqrt{2}``, ``\u221a2``) is the answer."""
    lines = [ln for ln in text[-_TAIL:].strip().splitlines() if ln.strip()]
    if not lines:
        return None
    line = lines[-1].strip().strip("$").strip().rstrip(".").strip()
    if 0 < len(line) <= 80 and _MATHY.search(line) and not _WORD.search(line):  # no prose words
        return line
    return None


def last_number(text: str) -> str | None:
    """The last number or simple fraction; a hedge such as "5 or 6" is returned whole."""
    tail = text[-_TAIL:]
    last = None
    for m in _NUMBER.finditer(tail):
        last = m
    if last is None:
        return None
    line_start = tail.rfind("\n", 0, last.start()) + 1
    before = tail[line_start:last.start()]
    if _HEDGE_BEFORE.search(before):
        return tail[line_start:last.end()].strip()
    return last.group(0).strip()


def extract_answer(response: str, fallback: str = "last_number") -> str | None:
    """The final answer in a model response, or None when there is none to find."""
    if fallback not in FALLBACKS:
        raise ValueError(f"unknown fallback {fallback!r}; valid choices: {', '.join(FALLBACKS)}")
    if not isinstance(response, str):
        raise TypeError(f"response must be str, got {type(response).__name__}")
    text = strip_think(response)
    boxed = last_boxed(text)
    if boxed is not None:
        return boxed
    if any(c + "{" in text for c in _BOX_CMDS):
        return None  # the final box was never closed (truncated or malformed)
    marked = after_marker(text)
    if marked is not None:
        inner = last_boxed(marked)
        return inner if inner is not None else marked
    if fallback == "none":
        return None
    return bare_answer(text) or last_number(text)


def extract_gold(gold_or_solution) -> str | None:
    """The reference answer: a raw dataset answer (``"025"``, ``27.0``), a MATH solution's
    last ``\\boxed{}``, or a GSM8K ``#### 42`` solution."""
    if gold_or_solution is None:
        return None
    if isinstance(gold_or_solution, bool):
        raise TypeError("gold must be a string or a number, got bool")
    if isinstance(gold_or_solution, (int, float)):
        return repr(gold_or_solution) if isinstance(gold_or_solution, float) else str(gold_or_solution)
    if not isinstance(gold_or_solution, str):
        raise TypeError(f"gold must be a string or a number, got {type(gold_or_solution).__name__}")
    text = gold_or_solution.strip()
    if not text:
        return None
    boxed = last_boxed(text)
    if boxed is not None:
        return boxed
    if "####" in text:
        return text.rsplit("####", 1)[1].strip() or None
    return text.strip("$").strip() or None
