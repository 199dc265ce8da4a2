"""pass@k, maj@k, avg@n against brute-force enumeration of every k-subset."""
from __future__ import annotations

import itertools
import math
import random
from collections import Counter

import pytest

from reasoner.benchmarks.metrics import (answer_classes, avg_at_n, default_k_list, maj_at_k, mean_std, pass_at_k,
                                string_equivalent)


def brute_pass(flags: list[bool], k: int) -> float:
    subsets = list(itertools.combinations(range(len(flags)), k))
    return sum(any(flags[i] for i in s) for s in subsets) / len(subsets)


def brute_maj(answers: list[str | None], flags: list[bool], k: int, canon=lambda a: a) -> float:
    """Majority vote in every k-subset; a tie among the top classes splits the credit evenly."""
    total = 0.0
    subsets = list(itertools.combinations(range(len(answers)), k))
    for s in subsets:
        votes = Counter(canon(answers[i]) for i in s if answers[i] is not None)
        if not votes:
            continue
        top = max(votes.values())
        winners = [a for a, c in votes.items() if c == top]
        right = {canon(answers[i]) for i in range(len(answers)) if flags[i] and answers[i] is not None}
        total += sum(w in right for w in winners) / len(winners)
    return total / len(subsets)


@pytest.mark.parametrize("n", [1, 2, 5, 8])
def test_pass_at_k_matches_enumeration(n):
    for c in range(n + 1):
        flags = [True] * c + [False] * (n - c)
        for k in range(1, n + 1):
            assert pass_at_k(n, c, k) == pytest.approx(brute_pass(flags, k), abs=1e-12)


def test_pass_at_k_hand_values_and_stability():
    # n=4, c=1, k=2: 1 - C(3,2)/C(4,2) = 1 - 3/6 = 0.5
    assert pass_at_k(4, 1, 2) == pytest.approx(0.5)
    # n=10, c=3, k=1: c/n = 0.3
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)
    assert pass_at_k(5, 0, 5) == 0.0 and pass_at_k(5, 1, 5) == 1.0
    # large n: C(2000, 1000) overflows a float; the product form stays finite and exact enough
    exact = 1 - math.comb(1990, 1000) / math.comb(2000, 1000)
    assert pass_at_k(2000, 10, 1000) == pytest.approx(exact, rel=1e-12)


@pytest.mark.parametrize("bad", [(0, 0, 1), (4, 5, 1), (4, 1, 0), (4, 1, 5), (4, -1, 1)])
def test_pass_at_k_rejects_bad_input(bad):
    with pytest.raises(ValueError):
        pass_at_k(*bad)


CASES = [
    (["1", "1", "2"], [True, True, False]),
    (["1", "2", "2", "3", None], [True, False, False, False, False]),
    (["5", "6", "5", "6", "7", "7"], [False, True, False, True, False, False]),  # three-way ties
    ([None, None, "4"], [False, False, True]),  # abstentions never win
    (["a", "b", "c", "d", "e", "f", "g"], [False, False, True, False, False, False, False]),  # all distinct
]


@pytest.mark.parametrize("answers,flags", CASES)
def test_maj_at_k_matches_enumeration(answers, flags):
    for k in range(1, len(answers) + 1):
        got = maj_at_k(answers, flags, k, equivalent=string_equivalent)
        assert got == pytest.approx(brute_maj(answers, flags, k), abs=1e-12), k


def test_maj_at_k_random_cases_match_enumeration():
    rng = random.Random(0)
    for _ in range(40):
        n = rng.randint(1, 9)
        answers = [rng.choice(["1", "2", "3", None]) for _ in range(n)]
        flags = [a == "2" for a in answers]
        for k in range(1, n + 1):
            assert maj_at_k(answers, flags, k, equivalent=string_equivalent) == pytest.approx(
                brute_maj(answers, flags, k), abs=1e-12)


def test_maj_at_k_groups_by_equivalence():
    # "\\frac{1}{2}" and "1/2" are one class under the equivalence, so they (2 votes) beat "3" (1 vote)
    canon = {"\\frac{1}{2}": "1/2", "1/2": "1/2", "3": "3"}
    eq = lambda a, b: canon[a] == canon[b]  # noqa: E731
    answers, flags = ["\\frac{1}{2}", "1/2", "3"], [True, True, False]
    assert maj_at_k(answers, flags, 3, equivalent=eq) == 1.0
    # with plain string equality it is a three-way tie at one vote each: credit 2/3
    assert maj_at_k(answers, flags, 3, equivalent=string_equivalent) == pytest.approx(2 / 3)
    assert maj_at_k(answers, flags, 2, equivalent=eq) == pytest.approx(
        brute_maj(answers, flags, 2, canon=lambda a: canon[a]))


def test_plain_numbers_of_equal_value_always_share_a_class():
    # 27 / 27.0 / 27.00 and 1/2 / 0.5 are merged by exact value before `equivalent` is asked;
    # 0 is a value too (a falsy Fraction must not fall back to its text)
    classes, n_none = answer_classes(["27", "27.0", "27.00", "1/2", "0.5", "0", "0.0"], [1, 1, 1, 0, 0, 0, 0],
                                     string_equivalent)
    assert sorted(classes) == [(2, 0.0), (2, 0.0), (3, 1.0)] and n_none == 0


def test_tie_between_right_and_wrong_scores_half():
    # k = n = 2, one right, one wrong answer: a 1-1 tie, half credit
    assert maj_at_k(["7", "8"], [True, False], 2, equivalent=string_equivalent) == 0.5


def test_answer_classes_counts_abstentions():
    classes, n_none = answer_classes(["1", " 1", None, "2"], [1, 1, 0, 0], string_equivalent)
    assert sorted(classes) == [(1, 0.0), (2, 1.0)] and n_none == 1


def test_maj_at_k_n32_is_fast_and_bounded():
    import time

    rng = random.Random(1)
    answers = [str(rng.randint(0, 40)) for _ in range(32)]  # ~25 distinct answers: the hard case
    flags = [a == answers[0] for a in answers]
    t0 = time.perf_counter()
    vals = [maj_at_k(answers, flags, k, equivalent=string_equivalent) for k in default_k_list(32)]
    assert time.perf_counter() - t0 < 2.0
    assert all(0.0 <= v <= 1.0 for v in vals)
    # k = n is the plain majority vote over all 32 samples
    votes = Counter(answers)
    top = max(votes.values())
    winners = [a for a, c in votes.items() if c == top]
    assert vals[-1] == pytest.approx(sum(w == answers[0] for w in winners) / len(winners))


def test_avg_at_n_default_k_list_and_mean_std():
    assert avg_at_n([True, False, True, True]) == 0.75
    assert default_k_list(32) == [1, 2, 4, 8, 16, 32] and default_k_list(6) == [1, 2, 4, 6]
    mean, std = mean_std([0.2, 0.4])
    assert mean == pytest.approx(0.3) and std == pytest.approx(math.sqrt(0.02))  # ((0.1^2)*2)/(2-1)
    assert mean_std([0.5]) == (0.5, 0.0)
    with pytest.raises(ValueError):
        avg_at_n([])
