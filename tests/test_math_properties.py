"""Property-based tests of the math checker (issue 17): random exact values rendered in
equivalent forms must be judged equal; perturbations (off by one, a sign, a rounded irrational,
a dropped element) must be judged unequal. The same renderers make the "property" table of
``scripts/bench_verifiers.py`` (``generated_rows``), so the figures there come from cases the
checker was not tuned on."""
import random
from fractions import Fraction

from hypothesis import given, settings, strategies as st

from reasoner.verifiers.math import check

FAST = settings(max_examples=40, deadline=None, derandomize=True)
SLOW = settings(max_examples=15, deadline=None, derandomize=True)  # cases that go to sympy workers
ENVS = ["pmatrix", "bmatrix", "Bmatrix", "vmatrix", "Vmatrix", "matrix", "smallmatrix", "array"]


def judged(pred: str, gold: str) -> bool:
    return check(f"So the answer is $\\boxed{{{pred}}}$.", gold, timeout=10).status == "correct"


def _terminating(q: int) -> bool:
    for p in (2, 5):
        while q % p == 0:
            q //= p
    return q == 1


def fraction_forms(v: Fraction) -> list[str]:
    """Equivalent renderings of one rational number."""
    p, q = v.numerator, v.denominator
    sign = "-" if v < 0 else ""
    forms = [f"{sign}\\frac{{{abs(p)}}}{{{q}}}", f"{p}/{q}", f"\\dfrac{{{p}}}{{{q}}}", f"{sign}\\frac{{{3 * abs(p)}}}{{{3 * q}}}"]
    if _terminating(q):
        forms.append(str(p / q) if len(str(p / q)) < 15 else format(Fraction(p, q).limit_denominator()))
    if abs(p) > q and q > 1:
        whole, rest = divmod(abs(p), q)
        forms += [f"{sign}{whole}\\frac{{{rest}}}{{{q}}}", f"{sign}{whole} {rest}/{q}"]
    return forms


def fraction_wrongs(v: Fraction) -> list[str]:
    p, q = v.numerator, v.denominator
    out = [f"\\frac{{{p + 1}}}{{{q}}}"]
    if p:  # 0/(q+1) and -0 are still 0
        out += [f"{p}/{q + 1}", f"\\frac{{{-p}}}{{{q}}}"]
    if not _terminating(q):
        out += [f"{float(v):.3f}", f"{float(v):.6f}"]
    return out


def interval(lo: int, hi: int, lc: bool, hc: bool) -> tuple[str, str]:
    """An interval and the inequality that describes it."""
    text = ("[" if lc else "(") + f"{lo}, {hi}" + ("]" if hc else ")")
    le, lt = "\\leq", "<"
    ineq = f"{lo} {le if lc else lt} x {le if hc else lt} {hi}"
    return text, ineq


def matrix(rows: list[list[int]], env: str) -> str:
    body = " \\\\ ".join(" & ".join(str(x) for x in r) for r in rows)
    spec = "{" + "c" * len(rows[0]) + "}" if env == "array" else ""
    return f"\\begin{{{env}}}{spec}{body}\\end{{{env}}}"


def linear(coef: list[int], names: str = "xyz") -> str:
    return " + ".join(f"{c}{v}" for c, v in zip(coef, names)).replace("+ -", "- ")


@FAST
@given(st.fractions(min_value=-50, max_value=50, max_denominator=40))
def test_fraction_forms_equal_and_perturbations_unequal(v):
    gold = fraction_forms(v)[0]
    assert all(judged(f, gold) for f in fraction_forms(v)), fraction_forms(v)
    assert not any(judged(f, gold) for f in fraction_wrongs(v)), fraction_wrongs(v)


@FAST
@given(st.integers(-10**6, 10**6), st.integers(1, 99))
def test_percent_and_units_may_be_dropped(n, k):
    assert judged(f"{n}\\%", str(n)) and judged(f"{n} \\text{{ cm}}", str(n)) and judged(f"{n}^\\circ", str(n))
    assert not judged(f"{n + k}\\%", str(n))


@FAST
@given(st.integers(0, 60), st.integers(1, 10**30))
def test_exact_magnitudes(e, n):
    assert judged(f"10^{{{e}}}", str(10 ** e)) and not judged(f"10^{{{e}}}+1", str(10 ** e))
    assert not judged(f"10^{{-{e + 20}}}", "0")
    assert judged(str(n), str(n)) and not judged(str(n + 1), str(n))


@FAST
@given(st.lists(st.integers(-30, 30), min_size=2, max_size=6, unique=True), st.randoms(use_true_random=False))
def test_unordered_lists(xs, rnd):
    gold = ", ".join(map(str, xs))
    ys = xs[:]
    rnd.shuffle(ys)
    assert judged(", ".join(map(str, ys)), gold)
    assert judged("\\{" + ", ".join(map(str, ys)) + "\\}", "\\{" + gold + "\\}")
    assert not judged(", ".join(map(str, ys[1:])), gold)  # a dropped element
    assert not judged(", ".join(map(str, ys + [max(xs) + 1])), gold)  # an extra one


@FAST
@given(st.integers(-20, 20), st.integers(1, 20), st.booleans(), st.booleans())
def test_interval_vs_inequality(lo, width, lc, hc):
    text, ineq = interval(lo, lo + width, lc, hc)
    assert judged(ineq, text) and judged(text, ineq)
    flipped, _ = interval(lo, lo + width, not lc, hc)
    assert not judged(flipped, text) and not judged(ineq, flipped)
    rel = "\\geq" if lc else ">"
    assert judged(f"x {rel} {lo}", ("[" if lc else "(") + f"{lo}, \\infty)")


@FAST
@given(st.lists(st.lists(st.integers(-9, 9), min_size=2, max_size=3), min_size=1, max_size=3).filter(
    lambda rows: len({len(r) for r in rows}) == 1), st.sampled_from(ENVS), st.integers(0, 8))
def test_every_matrix_environment(rows, env, k):
    gold = matrix(rows, "pmatrix")
    assert judged(matrix(rows, env), gold)
    bad = [r[:] for r in rows]
    i, j = k % len(rows), k % len(rows[0])
    bad[i][j] += 1
    assert not judged(matrix(bad, env), gold)


@SLOW
@given(st.lists(st.integers(-9, 9).filter(bool), min_size=3, max_size=3), st.integers(-9, 9), st.integers(2, 5))
def test_scaled_and_rearranged_equations(coef, c, k):
    gold = f"{linear(coef)} = {c}"
    moved = f"{linear([-k * a for a in coef])} + {k * c} = 0".replace("+ -", "- ")
    assert judged(moved, gold)
    assert not judged(f"{linear(coef)} = {c + 1}", gold)


@SLOW
@given(st.lists(st.integers(-9, 9).filter(bool), min_size=3, max_size=3), st.randoms(use_true_random=False))
def test_reordered_sums(coef, rnd):
    terms = [f"{coef[0]}x^2", f"{coef[1]}x", f"{coef[2]}"]
    gold = " + ".join(terms).replace("+ -", "- ")
    rnd.shuffle(terms)
    assert judged(" + ".join(terms).replace("+ -", "- "), gold)
    assert not judged(gold.replace("x^2", "x^3", 1), gold)


@SLOW
@given(st.integers(2, 50).filter(lambda n: int(n ** 0.5) ** 2 != n), st.integers(2, 6), st.integers(2, 7))
def test_radicals_exact_but_not_rounded(n, places, k):
    gold = f"{k}\\sqrt{{{n}}}"
    assert judged(f"\\sqrt{{{k * k * n}}}", gold)
    assert not judged(f"{k * n ** 0.5:.{places}f}", gold)
    assert not judged(f"{k + 1}\\sqrt{{{n}}}", gold)


def generated_rows(seed: int = 17, n: int = 40) -> list[dict]:
    """A deterministic table from the same renderers (for the bench): gold, response, expected."""
    rnd, rows = random.Random(seed), []

    def add(cat, gold, pred, exp):
        rows.append({"category": cat, "gold": gold, "response": f"So the answer is $\\boxed{{{pred}}}$.", "expected": exp})
    for _ in range(n):
        v = Fraction(rnd.randint(-99, 99), rnd.randint(1, 40))
        gold = fraction_forms(v)[0]
        add("prop_fraction", gold, rnd.choice(fraction_forms(v)[1:]), True)
        add("prop_fraction", gold, rnd.choice(fraction_wrongs(v)), False)
        lo, w = rnd.randint(-20, 20), rnd.randint(1, 20)
        lc, hc = rnd.random() < .5, rnd.random() < .5
        text, ineq = interval(lo, lo + w, lc, hc)
        add("prop_interval", text, ineq, True)
        add("prop_interval", interval(lo, lo + w, not lc, hc)[0], ineq, False)
        m = [[rnd.randint(-9, 9) for _ in range(2)] for _ in range(2)]
        add("prop_matrix", matrix(m, "pmatrix"), matrix(m, rnd.choice(ENVS)), True)
        m2 = [r[:] for r in m]
        m2[rnd.randint(0, 1)][rnd.randint(0, 1)] -= 1
        add("prop_matrix", matrix(m, "pmatrix"), matrix(m2, rnd.choice(ENVS)), False)
        coef, c, k = [rnd.choice([-3, -2, -1, 1, 2, 3, 4]) for _ in range(3)], rnd.randint(-9, 9), rnd.randint(2, 5)
        add("prop_equation", f"{linear(coef)} = {c}", f"{linear([k * a for a in coef])} = {k * c}", True)
        add("prop_equation", f"{linear(coef)} = {c}", f"{linear(coef)} = {c - 1}", False)
        r = rnd.choice([2, 3, 5, 6, 7, 10, 11])
        add("prop_radical", f"\\sqrt{{{r}}}", f"{r ** 0.5:.{rnd.randint(2, 5)}f}", False)
        xs = rnd.sample(range(-20, 20), rnd.randint(2, 4))
        add("prop_list", ", ".join(map(str, xs)), ", ".join(map(str, xs[::-1])), True)
        add("prop_list", ", ".join(map(str, xs)), ", ".join(map(str, xs[1:])), False)
    return rows


def test_generated_rows_are_judged_by_policy():
    rows = generated_rows(n=6)
    wrong = [r for r in rows if judged(r["response"].split("boxed{", 1)[1][:-3], r["gold"]) != r["expected"]]
    assert not wrong, wrong
