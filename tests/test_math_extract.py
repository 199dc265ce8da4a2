"""Extraction only: what answer is pulled out of a response or a gold field (no comparison)."""
import pytest

from reasoner.verifiers.math import extract_answer, extract_gold


@pytest.mark.parametrize("response, expected", [
    ("so $\\boxed{\\frac{1}{2}}$.", "\\frac{1}{2}"),
    ("\\boxed{\\frac{a}{\\sqrt{b}}} then \\boxed{\\{1, 2\\}}", "\\{1, 2\\}"),  # the LAST box, nested braces
    ("\\boxed 5", "5"),
    ("\\fbox{7}", "7"),
    ("The answer is 42.", "42"),
    ("The answer is 42, since 6*7=42.", "42"),
    ("Final Answer: The final answer is $3.5$. I hope it is correct.", "3.5"),
    ("Natalia sold <<48/2=24>>24 clips.\n#### 72", "72"),
    ("<think>maybe \\boxed{41}</think> so \\boxed{42}", "42"),
    ("47", "47"), ("-12", "-12"), ("3/4", "3/4"), ("-5/6", "-5/6"), ("x=7", "x=7"), ("0.75", "0.75"),
    ("She has 1,250 apples", "1,250"),
    ("\u221a2", "\u221a2"),
    ("5 or 6", "5 or 6"),  # a hedge is kept whole so that the comparison can reject it
    ("It could be 4 or 5", "It could be 4 or 5"),  # the whole line of the hedge
])
def test_extract_answer(response, expected):
    assert extract_answer(response) == expected


@pytest.mark.parametrize("response", ["", "I don't know.", "<think>still thinking about 42", "Then \\boxed{5"])
def test_no_answer_is_none(response):
    assert extract_answer(response) is None


def test_fallback_none_needs_a_marker():
    assert extract_answer("47", fallback="none") is None
    assert extract_answer("The answer is 47", fallback="none") == "47"


def test_unknown_fallback_is_a_clear_error():
    with pytest.raises(ValueError, match="last_number"):
        extract_answer("47", fallback="first_number")
    with pytest.raises(TypeError):
        extract_answer(47)


@pytest.mark.parametrize("gold, expected", [
    ("025", "025"), (27.0, "27.0"), (5, "5"), ("\\frac{1}{2}", "\\frac{1}{2}"),
    ("\\left( 3, \\frac{\\pi}{2} \\right)", "\\left( 3, \\frac{\\pi}{2} \\right)"),
    ("We find $x=2$, so the answer is $\\boxed{\\frac{3}{4}}$.", "\\frac{3}{4}"),
    ("48/2 = 24 clips\n#### 72", "72"), ("$5$", "5"), ("", None), (None, None),
])
def test_extract_gold(gold, expected):
    assert extract_gold(gold) == expected


def test_megabyte_response_extracts_fast():
    import time
    text = "blah " * 200_000 + "\\boxed{7}"
    t = time.perf_counter()
    assert extract_answer(text) == "7"
    assert extract_answer("1 " * 500_000) == "1"
    assert time.perf_counter() - t < 1.0
