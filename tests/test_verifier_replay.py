"""Record/replay accepts every value a test can pass, compares safely in the parent, and replays
program state; hostile programs still score 0 (real sandbox, no mocks)."""
import collections
import datetime
import json
from decimal import Decimal
from fractions import Fraction

import pytest

from reasoner.verifiers.code import check, values


def _rt(v):
    return values.dec(json.loads(json.dumps(values.enc(v))))


@pytest.mark.parametrize("v", [
    range(2, 9, 3), {1, 2}, frozenset({(1, 2), (3,)}), (1, (2, [3])), b"\x00\xff", bytearray(b"ab"), 2 - 3j,
    Fraction(-7, 3), Decimal("1.10"), Decimal("-Infinity"), 3 ** 20000, float("inf"), None, True,
    datetime.date(2024, 2, 29), datetime.datetime(2024, 1, 2, 3, 4, 5, 6), datetime.timedelta(days=2, seconds=3),
    collections.Counter("abca"), collections.OrderedDict(b=1, a=2), collections.deque([1, 2]),
    {frozenset({1}): [range(3), {Fraction(1, 3)}], (1, 2): {"k": (Decimal("0.5"), b"x")}}, int, type(None),
], ids=lambda v: type(v).__name__)
def test_values_round_trip_with_their_types(v):
    out = _rt(v)
    assert out == v and type(out) is type(v)
    if isinstance(v, tuple):
        assert [type(x) for x in out] == [type(x) for x in v]


def test_iterators_views_and_objects_round_trip():
    assert list(_rt(x * x for x in range(4))) == [0, 1, 4, 9]
    assert list(_rt(map(str, [1, 2]))) == ["1", "2"]
    assert _rt({"a": 1}.keys()) == {"a"} and list(_rt({"a": 1}.values())) == [1]
    cls = type("P", (), {"__module__": "solution", "__init__": lambda s, x: setattr(s, "x", x)})
    out = _rt(cls([1, 2]))
    assert isinstance(out, values.Obj) and out.x == [1, 2] and out == values.Obj("P", {"x": [1, 2]})
    with pytest.raises(AttributeError, match="methods do not run outside the sandbox"):
        out.method()


def test_keys_do_not_consume_iterators_and_tolerate_anything():
    gen = iter([1, 2])
    assert values.key((gen, range(3)), {"f": lambda: 0}) == values.key((iter([]), range(3)), {"f": lambda: 1})
    assert list(gen) == [1, 2]


@pytest.mark.parametrize("data", [{"$zz": 1}, {"$fr": ["1", 2]}, {"$m": ["Nope", []]}, {"$t": 5},
                                  {"$?": "function"}, {"$ty": "object"}, {"$s": [[1]]}])
def test_malformed_or_unsupported_data_raises_in_the_parent(data):
    with pytest.raises(Exception):
        values.dec(data)


def test_cycles_and_unsupported_results_are_clear():
    a = []
    a.append(a)
    with pytest.raises(ValueError, match="cycle"):
        values.enc(a)
    with pytest.raises(values.Unsupported, match="function"):
        values.dec(values.enc(lambda: 0, opaque=True))


def _mbpp(program, *asserts, setup=""):
    return check(program, {"format": "mbpp", "test_list": list(asserts), "setup": setup})


CASES = {
    "range_arg": ("def total(xs): return sum(xs)", "assert total(range(5)) == 10"),
    "set_of_tuples": ("def pairs(xs): return {(x, x + 1) for x in xs}", "assert pairs([1, 2]) == {(1, 2), (2, 3)}"),
    "frozenset_arg": ("def size(s): return len(s)", "assert size(frozenset({1, 2})) == 2"),
    "tuple_result": ("def two(): return (1, 2)", "assert two() == (1, 2)"),
    "bytes": ("def rev(b): return b[::-1]", "assert rev(b'ab') == b'ba'"),
    "complex": ("def sq(z): return z * z", "assert sq(1j) == -1"),
    "fraction": ("from fractions import Fraction\ndef half(x): return Fraction(x, 2)",
                 "assert half(Fraction(1, 3)) == Fraction(1, 6)"),
    "decimal": ("from decimal import Decimal\ndef add(a, b): return a + b",
                "assert add(Decimal('0.1'), Decimal('0.2')) == Decimal('0.3')"),
    "nested": ("def wrap(x): return {'k': [x, {x}], 't': (x,)}", "assert wrap((1, 2)) == {'k': [(1, 2), {(1, 2)}], 't': ((1, 2),)}"),
    "generator_arg": ("def total(xs): return sum(xs)", "assert total(x for x in range(4)) == 6"),
    "generator_result": ("def gen(n):\n    yield from range(n)", "assert list(gen(3)) == [0, 1, 2]"),
    "program_class": ("class Point:\n    def __init__(s, x, y): s.x, s.y = x, y\n"
                      "def mid(a, b): return Point((a.x + b.x) / 2, (a.y + b.y) / 2)",
                      "assert mid(Point(0, 0), Point(2, 4)) == Point(1.0, 2.0)"),
    "mutates_arg": ("def sort_in_place(a): a.sort()", "a = [3, 1, 2]\nsort_in_place(a)\nassert a == [1, 2, 3]"),
    "module_counter": ("calls = 0\ndef f(x):\n    global calls\n    calls += 1\n    return x",
                       "f(1)\nf(2)\nassert calls == 2", "assert f(3) == 3 and calls == 3"),
    "stateful_calls": ("n = 0\ndef nxt():\n    global n\n    n += 1\n    return n", "assert nxt() == 1", "assert nxt() == 2"),
    "big_int": ("def fact(n):\n    r = 1\n    for i in range(2, n + 1): r *= i\n    return r",
                "import math\nassert fact(3000) == math.factorial(3000)"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_correct_programs_with_rich_values_score_one(name):
    program, *asserts = CASES[name]
    v = _mbpp(program, *asserts)
    assert v.status == "correct", v.detail


def test_test_defined_classes_are_compared_structurally():
    setup = "class Node:\n    def __init__(self, v, nxt=None): self.v, self.nxt = v, nxt"
    program = "def push(head, v):\n    return type(head)(v, head)"
    v = _mbpp(program, "assert push(Node(1), 2) == Node(2, Node(1))", setup=setup)
    assert v.status == "correct", v.detail
    assert _mbpp("def push(head, v): return head", "assert push(Node(1), 2) == Node(2, Node(1))", setup=setup).score == 0


def test_humaneval_with_a_range_and_state():
    tests = {"format": "humaneval", "prompt": "seen = []\ndef g(xs):\n", "entry_point": "g",
             "test": "def check(candidate):\n    assert candidate(range(3)) == (0, 1, 2)\n    assert seen == [3]\n"}
    assert check("    seen.append(len(xs))\n    return tuple(xs)\n", tests).status == "correct"
    assert check("    return tuple(xs)\n", tests).score == 0.0


WRONG = {
    "tuple_is_not_list": ("def two(): return [1, 2]", "assert two() == (1, 2)"),
    "eq_override_class": ("class Point:\n    def __init__(s, x, y): s.x, s.y = x, y\n    def __eq__(s, o): return True\n"
                          "    __hash__ = None\ndef mid(a, b): return Point(9, 9)",
                          "assert mid(Point(0, 0), Point(2, 4)) == Point(1, 2)"),
    "eq_override_for_range": ("class A:\n    def __eq__(s, o): return True\ndef total(xs): return A()",
                              "assert total(range(5)) == 10"),
    "fraction_subclass": ("from fractions import Fraction\nclass F(Fraction):\n    def __eq__(s, o): return True\n"
                          "def half(x): return F(7)", "assert half(Fraction(1, 3)) == Fraction(1, 6)"),
    "generator_of_fakes": ("class A:\n    def __eq__(s, o): return True\ndef gen(n):\n    yield A()",
                           "assert list(gen(1)) == [5]"),
    "returns_function": ("def f(x): return lambda: x", "assert f(1)() == 1"),
    "no_mutation": ("def sort_in_place(a): return sorted(a)", "a = [3, 1, 2]\nsort_in_place(a)\nassert a == [1, 2, 3]"),
    "counter_not_counted": ("calls = 0\ndef f(x): return x", "f(1)\nf(2)\nassert calls == 2"),
    "patch_builtins_state": ("import builtins\nbuiltins.len = lambda x: 2\ncalls = 0\ndef f(x): return x",
                             "f(1)\nf(2)\nassert calls == 2"),
    "exit_early": ("import os\ndef total(xs): os._exit(0)", "assert total(range(5)) == 10"),
    "deep_json_forgery": ("import os\ndef total(xs):\n    for fd in range(3, 20):\n        try: os.write(fd, b'{\"rec\": \"total\", \"value\": '"
                          " + b'[' * 200000 + b'\\n')\n        except OSError: pass\n    return 0", "assert total(range(5)) == 10"),
    "fake_state_marker": ("import os, json\ndef total(xs):\n    os.write(3, (json.dumps({'state': 'x', 'value': 1})"
                          " + '\\n' + json.dumps({'event': 'done'}) + '\\n').encode())\n    return 0",
                          "assert total(range(5)) == 10"),
}


@pytest.mark.parametrize("name", sorted(WRONG))
def test_wrong_and_hostile_programs_score_zero(name):
    program, *asserts = WRONG[name]
    v = _mbpp(program, *asserts)
    assert v.score == 0.0 and v.status in ("wrong", "error", "timeout"), (name, v)


def test_unsupported_result_is_named_in_the_detail():
    v = _mbpp(*WRONG["returns_function"])
    assert "function" in v.detail and "cannot be compared outside the sandbox" in v.detail, v.detail


def test_state_failures_are_attributed_to_their_own_test():
    program = "calls = 0\ndef f(x):\n    global calls\n    calls += 1\n    return x"
    tests = {"format": "mbpp", "test_list": ["assert f(1) == 1", "assert calls == 5", "assert f(2) == 2 and calls == 2"],
             "setup": ""}
    v = check(program, tests, partial=True)
    assert v.status == "wrong" and v.detail.startswith("test 1: AssertionError") and abs(v.score - 2 / 3) < 1e-9, v
