"""The built-in math problem set: procedurally generated, exact answers, seeded.

Every kind enumerates a finite pool of problems. A problem belongs to a split by a fixed
rule on its own prompt text (a stable BLAKE2 hash, not Python's salted ``hash``), so the
splits never overlap whatever the seed or size: bucket 0 of 10 is ``test`` (held out),
bucket 1 is ``val`` (for early stopping of the warm start), the other 8 are ``train``.
The seed only picks which problems of a split are drawn and in what order.

Prompts are compact plain text for a character-level tokenizer; the completion a model
must produce is the bare answer (then EOS):

    add       "47+35="        -> "82"      (two-digit operands)
    sub       "47-35="        -> "12"      (two-digit operands, never negative)
    mul       "347*6="        -> "2082"
    linear    "3x+5=20,x="    -> "5"
    fraction  "1/2+1/3="      -> "5/6"     (reduced; "1" or "-1/6" when that is the value)

``style="question"`` words the same problems for a chat model ("What is 47 + 35?", "Solve
3x + 5 = 20 for x."); ids and splits stay those of the compact text, so both styles hold out
the very same problems.
"""
from __future__ import annotations

import functools
import hashlib
import random
import re
from fractions import Fraction
from typing import Callable, Iterator, NamedTuple

from reasoner.config import CHOICES
from reasoner.types import Problem

VERSION = 1  # bump whenever a pool or the split rule changes (models trained on the set rebuild)
SPLITS = ("train", "val", "test")
_BUCKETS = 10  # hash buckets: 0 -> test, 1 -> val, 2..9 -> train


class Item(NamedTuple):
    prompt: str
    answer: str


def _add() -> Iterator[Item]:
    for a in range(10, 100):
        for b in range(10, 100):
            yield Item(f"{a}+{b}=", str(a + b))


def _sub() -> Iterator[Item]:
    for a in range(10, 100):
        for b in range(10, a + 1):
            yield Item(f"{a}-{b}=", str(a - b))


def _mul() -> Iterator[Item]:
    for a in range(1000):
        for b in range(10):
            yield Item(f"{a}*{b}=", str(a * b))


def _linear() -> Iterator[Item]:
    for a in range(2, 10):
        for x in range(31):
            for b in range(1, 31):
                yield Item(f"{a}x+{b}={a * x + b},x=", str(x))
                yield Item(f"{a}x-{b}={a * x - b},x=", str(x))


def format_fraction(value: Fraction) -> str:
    """``Fraction(5, 6)`` -> ``"5/6"``; whole numbers print without a denominator."""
    return str(value.numerator) if value.denominator == 1 else f"{value.numerator}/{value.denominator}"


def _fraction() -> Iterator[Item]:
    proper = [(n, d) for d in range(2, 13) for n in range(1, d)]
    for n1, d1 in proper:
        for n2, d2 in proper:
            x, y = Fraction(n1, d1), Fraction(n2, d2)
            yield Item(f"{n1}/{d1}+{n2}/{d2}=", format_fraction(x + y))
            yield Item(f"{n1}/{d1}-{n2}/{d2}=", format_fraction(x - y))


KINDS: dict[str, Callable[[], Iterator[Item]]] = {
    "add": _add,
    "sub": _sub,
    "mul": _mul,
    "linear": _linear,
    "fraction": _fraction,
}


def parse_kinds(kinds: list[str] | tuple[str, ...] | str) -> list[str]:
    """``"add, sub"`` or ``["add", "sub"]`` -> ``["add", "sub"]``; unknown names raise ValueError."""
    names = [k.strip() for k in (kinds.split(",") if isinstance(kinds, str) else kinds) if k.strip()]
    if not names:
        raise ValueError(f"no synthetic problem kinds given; valid kinds: {', '.join(KINDS)}")
    bad = [k for k in names if k not in KINDS]
    if bad:
        raise ValueError(f"unknown synthetic problem kind(s) {bad}; valid kinds: {', '.join(KINDS)}")
    return list(dict.fromkeys(names))


def stable_hash(text: str) -> int:
    """A hash of ``text`` that is the same in every process and on every machine."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


def split_of(prompt: str) -> str:
    bucket = stable_hash(prompt) % _BUCKETS
    return "test" if bucket == 0 else "val" if bucket == 1 else "train"


@functools.lru_cache(maxsize=None)
def pool(kind: str, split: str) -> tuple[Item, ...]:
    """Every problem of ``kind`` that falls in ``split``, in enumeration order."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
    return tuple(item for item in KINDS[parse_kinds(kind)[0]]() if split_of(item.prompt) == split)


STYLES = CHOICES["data.synthetic_style"]  # compact | question


def as_question(compact: str) -> str:
    """``"47+35="`` -> ``"What is 47 + 35?"``; ``"3x+5=20,x="`` -> ``"Solve 3x + 5 = 20 for x."``."""
    spaced = lambda e: re.sub(r"(?<=[\w)])([+\-*=])", r" \1 ", e)  # noqa: E731  binary operators only
    if compact.endswith(",x="):
        return f"Solve {spaced(compact[:-3])} for x."
    return f"What is {spaced(compact.rstrip('='))}?"


def _to_problem(kind: str, item: Item, style: str = "compact") -> Problem:
    return Problem(
        id=f"synthetic-{kind}-{stable_hash(item.prompt):016x}",
        prompt=item.prompt if style == "compact" else as_question(item.prompt),
        answer=item.answer,
        verifier="math",
        source="synthetic",
        meta={"kind": kind},
    )


def make_problems(split: str, n: int, seed: int = 0, kinds: list[str] | str = "add,sub",
                  style: str = "compact") -> list[Problem]:
    """``n`` problems of ``split`` ("train", "val" or "test"), the kinds mixed evenly, worded in ``style``.

    Problems are distinct while the split's pool lasts; ``train`` then goes on with a fresh
    shuffle of the pool (epochs), while ``val``/``test`` raise ValueError, since a held-out set
    with repeats would overstate its size. ``n = 0`` returns the whole pool of the split.
    """
    names = parse_kinds(kinds)
    if style not in STYLES:
        raise ValueError(f"unknown synthetic style {style!r}; valid styles: {', '.join(STYLES)}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    pools = {k: pool(k, split) for k in names}
    total = sum(len(p) for p in pools.values())
    if n == 0:
        n = total
    if n > total and split != "train":
        raise ValueError(f"asked for {n} {split} problems of kinds {names}, but only {total} distinct ones exist")
    rng = random.Random(f"{seed}:{split}:{','.join(names)}")
    streams = {k: _shuffled(pools[k], rng, repeat=split == "train") for k in names}
    alive = list(names)
    out: list[Problem] = []
    while len(out) < n:
        kind = alive[len(out) % len(alive)]  # round robin: kinds stay balanced
        item = next(streams[kind], None)
        if item is None:  # a held-out pool ran dry; the other kinds fill in
            alive.remove(kind)
            continue
        out.append(_to_problem(kind, item, style))
    return out


def _shuffled(items: tuple[Item, ...], rng: random.Random, repeat: bool) -> Iterator[Item]:
    """The items in shuffled order; with ``repeat``, reshuffled and repeated forever."""
    while items:
        order = list(items)
        rng.shuffle(order)
        yield from order
        if not repeat:
            return
