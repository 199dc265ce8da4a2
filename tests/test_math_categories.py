"""Issue 17's failure categories, one table each: (gold, prediction, expected), Math-Verify style."""
import pytest

from reasoner.verifiers.math import check

T, F = True, False
CATEGORIES = {
    "matrices": [
        ("\\begin{pmatrix}5&6\\\\7&8\\end{pmatrix}", "\\begin{bmatrix}5 & 6 \\\\\n 7 & 8\\end{bmatrix}", T),
        ("\\begin{pmatrix}5&6\\\\7&8\\end{pmatrix}", "\\left(\\begin{array}{cc}5&6\\\\7&8\\end{array}\\right)", T),
        ("\\begin{pmatrix}5&6\\\\7&8\\end{pmatrix}", "\\begin{Vmatrix}5&6\\\\7&8\\end{Vmatrix}", T),
        ("\\begin{pmatrix}5&6\\\\7&8\\end{pmatrix}", "\\begin{pmatrix}5&6\\\\8&7\\end{pmatrix}", F),
        ("\\begin{pmatrix}\\frac14\\\\1\\end{pmatrix}", "\\begin{pmatrix}0.25\\\\1\\end{pmatrix}", T),
        ("\\begin{pmatrix}\\frac16\\\\1\\end{pmatrix}", "\\begin{pmatrix}0.167\\\\1\\end{pmatrix}", F),
        ("\\begin{pmatrix}2&4\\\\6&8\\end{pmatrix}", "2\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}", T),
        ("\\begin{pmatrix}2&4\\\\6&8\\end{pmatrix}", "4\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}", F),
        ("\\begin{pmatrix}1\\\\2\\end{pmatrix}", "\\begin{pmatrix}1\\\\2\\\\0\\end{pmatrix}", F),
    ],
    "labelled": [
        ("9", "y = 9", T), ("9", "y = 8", F), ("(2,-5)", "(p, q) = (2, -5)", T), ("(2,-5)", "(p,q)=(-5,2)", F),
        ("60", "\\alpha = 60^\\circ", T), ("13", "a + b = 13", T), ("13", "a+b=14", F), ("40", "20 + 20 = 40", T),
        ("40", "20+20=41", F), ("[1,4)", "s \\in [1, 4)", T), ("[1,4)", "s\\in[1,4]", F), ("7", "x = 3 + 4 = 7", T),
    ],
    "plus_minus_lists": [
        ("-4, 4", "x = \\pm 4", T), ("4", "x = \\pm 4", F), ("2, -2, i, -i", "\\pm 2, \\pm i", T),
        ("2, -2, i", "\\pm 2, \\pm i", F), ("2+\\sqrt{3}, 2-\\sqrt{3}", "x = 2 \\pm \\sqrt{3}", T),
        ("2+\\sqrt{3}", "x = 2 \\pm \\sqrt{3}", F), ("1, 2", "x = 1, 2", T), ("1, 2", "x = 1, 3", F),
        ("6", "y = 6, 6", T), ("6", "y = 6, 7", F),
    ],
    "equations": [
        ("2x+4y=10", "x + 2y = 5", T), ("2x+4y=10", "x+2y=10", F), ("y=4x-1", "4x - y - 1 = 0", T),
        ("y=4x-1", "4x-y+1=0", F), ("x^2+y^2=9", "3x^2+3y^2-27=0", T), ("x^2+y^2=9", "x^2+y^2=3", F),
        ("y=2x", "2x", T), ("x+y=5", "5", F),
    ],
    "exact_tolerance": [
        ("e", "2.7183", F), ("\\frac{5}{7}", "0.714", F), ("\\frac{5}{7}", "0.\\overline{714285}", T), ("\\pi", "3.1416", F),
        ("\\sqrt{3}", "1.732", F), ("0", "10^{-25}", F), ("0", "0.00000000001", F), ("10^{18}", "10^{18}+1", F),
        ("10^{18}", "1000000000000000000", T), ("\\frac{5}{8}", "0.625", T), ("2.50", "2.5", T), ("\\ln 3", "1.0986", F),
    ],
    "sets": [
        ("\\mathbb{R}", "(-\\infty,\\infty)", T), ("\\mathbb{R}", "\\text{all real numbers}", T), ("\\mathbb{R}", "[0,\\infty)", F),
        ("\\varnothing", "\\emptyset", T), ("\\emptyset", "\\{ \\}", T), ("\\emptyset", "\\{1\\}", F),
        ("\\mathbb{R}\\setminus\\{3\\}", "(-\\infty,3)\\cup(3,\\infty)", T), ("\\mathbb{R}\\setminus\\{3\\}", "(-\\infty,3]\\cup(3,\\infty)", F),
        ("(-\\infty,0)\\cup(0,\\infty)", "\\mathbb{R}\\setminus\\{0\\}", T), ("\\{1,2\\}", "\\{2, 1\\}", T),
        ("[1,\\infty)", "\\{x \\mid x \\geq 1\\}", T),
    ],
    "text": [
        ("\\text{Yes}", "YES", T), ("\\text{yes}", "\\text{no}", F), ("\\text{Monday}", "monday", T), ("C", "(C) 42", T),
        ("C", "\\text{(D)} 42", F), ("(A)", "A", T), ("E", "\\textbf{(E)}\\ 3\\sqrt{2}", T),
    ],
    "nesting": [
        ("4", "(" * 2500 + "4" + ")" * 2500, T), ("5", "(" * 2500 + "4" + ")" * 2500, F), ("2", "{" * 4000 + "2" + "}" * 4000, T),
        ("2000", "+".join(["2"] * 1000), T), ("2001", "+".join(["2"] * 1000), F), ("9", "\\frac{" * 400 + "9" + "}{1}" * 400, T),
        ("10", "\\frac{" * 400 + "9" + "}{1}" * 400, F),
    ],
    "number_words": [("8", "eight", T), ("8", "nine", F), ("34", "thirty-four", T), ("300", "three hundred", T), ("13", "thirty", F)],
    "mixed_repeating": [
        ("\\frac{7}{2}", "3\\frac12", T), ("\\frac{7}{2}", "3 1/2", T), ("\\frac{7}{2}", "3\\frac13", F), ("\\frac23", "0.\\overline{6}", T),
        ("\\frac{5}{6}", "0.8\\overline{3}", T), ("\\frac{5}{6}", "0.83", F),
    ],
    "hedged_extra_missing": [
        ("4", "4 or 5", F), ("4", "4, 5", F), ("4, 5", "4", F), ("4, 5", "5, 4", T), ("4", "4, 4", T), ("\\{4,5\\}", "\\{4,5,5\\}", T),
    ],
    "intervals": [
        ("(3,\\infty)", "x > 3", T), ("(3,\\infty)", "x\\geq3", F), ("(-\\infty,-1]", "x \\le -1", T), ("(0,2]", "0 < y \\le 2", T),
        ("(0,2]", "0<y<2", F),
    ],
    "unicode": [("\\sqrt{5}", "\u221a5", T), ("\\sqrt{5}", "\u221a6", F), ("-\\infty", "-\u221e", T), ("\\frac{3}{4}", "\u00be", T),
                ("3\\pi", "3\u03c0", T)],
}
CASES = [(cat, g, p, e) for cat, rows in CATEGORIES.items() for g, p, e in rows]


@pytest.mark.parametrize("category, gold, pred, expected", CASES, ids=[f"{c}-{i}" for i, (c, *_ ) in enumerate(CASES)])
def test_category_table(category, gold, pred, expected):
    assert (check(f"The final answer is $\\boxed{{{pred}}}$.", gold).status == "correct") is expected


@pytest.mark.parametrize("response, gold, expected", [
    ("Working...\n\n**Answer:** 17", "17", T), ("**Final Answer**: 17", "17", T), ("**Answer:** 18", "17", F),
    ("The answer is not 4, but 6.", "6", T), ("The answer is not 6, but 4.", "6", F),
    ("It is not 3. The answer is 8.", "8", T), ("The answer is eleven.", "11", T), ("## Final answer\n\n**23**", "23", T),
    ("The roots are 1 and 1, so the answer is $1, 1$.", "1", T),
])
def test_extraction(response, gold, expected):
    assert (check(response, gold).status == "correct") is expected
