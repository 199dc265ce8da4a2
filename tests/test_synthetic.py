"""The built-in synthetic problem set: seeded, split without overlap, answers exact."""
from __future__ import annotations

import re
from fractions import Fraction

import pytest
import sympy

from reasoner.data.synthetic import KINDS, make_problems, pool, split_of, stable_hash

ALL = ",".join(KINDS)


def recompute(kind: str, prompt: str) -> Fraction:
    """The answer worked out independently of the generator (sympy / Fraction)."""
    if kind == "linear":  # "3x+5=20,x=" -> solve 3x+5=20
        lhs, rhs = prompt.removesuffix(",x=").split("=")
        x = sympy.Symbol("x")
        (root,) = sympy.solve(sympy.Eq(sympy.sympify(lhs.replace("x", "*x")), sympy.sympify(rhs)), x)
        return Fraction(int(root.p), int(root.q))
    expr = prompt.removesuffix("=")
    if kind == "fraction":  # "1/2+1/3": two fractions, one operator
        a, op, b = re.fullmatch(r"(\d+/\d+)([+-])(\d+/\d+)", expr).groups()
        return Fraction(a) + Fraction(b) if op == "+" else Fraction(a) - Fraction(b)
    value = sympy.sympify(expr)
    return Fraction(int(value))


@pytest.mark.parametrize("kind", list(KINDS))
def test_answers_are_correct(kind):
    problems = make_problems("test", 200, seed=3, kinds=kind)
    assert len(problems) == 200
    for p in problems:
        assert p.meta == {"kind": kind} and p.verifier == "math" and p.source == "synthetic"
        assert Fraction(p.answer) == recompute(kind, p.prompt), p


def test_fractions_are_reduced_and_whole_numbers_bare():
    answers = [p.answer for p in make_problems("train", 2000, kinds="fraction")]
    for a in answers:
        value = Fraction(a)
        assert a == (str(value.numerator) if value.denominator == 1 else f"{value.numerator}/{value.denominator}")
    assert any("/" not in a for a in answers) and any(a.startswith("-") for a in answers)


def test_examples_from_the_contract():
    assert recompute("linear", "3x+5=20,x=") == 5
    assert recompute("fraction", "1/2+1/3=") == Fraction(5, 6)
    assert ("1/2+1/3=", "5/6") in pool("fraction", split_of("1/2+1/3="))


def test_same_seed_same_problems_other_seed_other_order():
    a = make_problems("train", 300, seed=1, kinds=ALL)
    assert a == make_problems("train", 300, seed=1, kinds=ALL)
    assert [p.prompt for p in a] != [p.prompt for p in make_problems("train", 300, seed=2, kinds=ALL)]


def test_train_val_test_never_overlap_whatever_the_seed():
    test = {p.prompt for s in (0, 1) for p in make_problems("test", 0, seed=s, kinds=ALL)}
    val = {p.prompt for p in make_problems("val", 0, seed=5, kinds=ALL)}
    train = {p.prompt for s in (0, 7) for p in make_problems("train", 30000, seed=s, kinds=ALL)}
    assert not test & train and not val & train and not test & val
    assert all(split_of(p) == "test" for p in test)


def test_held_out_set_is_large_distinct_and_balanced():
    test = make_problems("test", 512, seed=0, kinds="add,sub")
    assert len({p.prompt for p in test}) == 512
    kinds = [p.meta["kind"] for p in test]
    assert kinds.count("add") == kinds.count("sub") == 256
    assert len({p.id for p in test}) == 512


def test_train_repeats_when_asked_for_more_than_the_pool_but_test_refuses():
    n_train = len(pool("sub", "train"))
    train = make_problems("train", n_train + 10, kinds="sub")
    assert len(train) == n_train + 10 and len({p.prompt for p in train}) == n_train
    with pytest.raises(ValueError, match="distinct"):
        make_problems("test", len(pool("sub", "test")) + 1, kinds="sub")


def test_split_rule_is_frozen():
    # Golden values: the split must never move between processes, machines or releases
    # (Python's hash() is salted per process; ours is BLAKE2b-64 of the prompt).
    assert stable_hash("12+35=") == 10824905970751285180
    assert [split_of(p) for p in ("12+35=", "10+13=", "1/2+1/3=")] == ["test", "test", "train"]


def test_kinds_accept_lists_and_spaces():
    assert make_problems("test", 4, kinds=["add", "mul"]) == make_problems("test", 4, kinds=" add , mul ")


@pytest.mark.parametrize("bad", ["add,div", "", "Add"])
def test_unknown_kind_lists_the_valid_ones(bad):
    with pytest.raises(ValueError, match="add, sub, mul, linear, fraction"):
        make_problems("train", 4, kinds=bad)


def test_unknown_split_and_negative_n_fail_clearly():
    with pytest.raises(ValueError, match="train, val, test"):
        make_problems("dev", 4)
    with pytest.raises(ValueError, match="n must be"):
        make_problems("train", -1)


def test_question_style_words_the_same_held_out_problems():
    from reasoner.data.synthetic import as_question

    assert as_question("47+35=") == "What is 47 + 35?"
    assert as_question("3x-5=-2,x=") == "Solve 3x - 5 = -2 for x."
    assert as_question("1/2-1/3=") == "What is 1/2 - 1/3?"
    compact = make_problems("test", 40, kinds="add,sub,linear")
    worded = make_problems("test", 40, kinds="add,sub,linear", style="question")
    assert [p.id for p in compact] == [p.id for p in worded]  # same problems, same split
    assert [p.answer for p in compact] == [p.answer for p in worded]
    with pytest.raises(ValueError, match="valid styles: compact, question"):
        make_problems("test", 4, style="prose")
