"""The blind corpus (tests/data/math_blind.jsonl) is well-formed. It was written from issue 17's
label policy by an author who had not read the checker, and committed before the checker was first
run on it. Only its shape is tested here: it is a benchmark for scripts/bench_verifiers.py
(``--tables blind``), not a tuning target, so the checker's accuracy on it is never asserted."""
from collections import Counter
from pathlib import Path

import _corpus  # tests/_corpus.py

PATH = Path(__file__).parent / "data" / "math_blind.jsonl"
FIELDS = {"category": str, "gold": str, "response": str, "expected": bool, "note": str}


def rows() -> list[dict]:
    return _corpus.rows(PATH)


def test_fields_and_types():
    rs = rows()
    _corpus.check_fields(rs, FIELDS)
    for i, r in enumerate(rs):
        assert r["category"] and r["gold"].strip() and r["response"].strip() and r["note"], f"row {i}: empty field"


def test_size_balance_categories_and_no_duplicates():
    rs = rows()
    assert len(rs) >= 450
    pairs = [(r["gold"], r["response"]) for r in rs]
    assert len(set(pairs)) == len(pairs), "duplicate (gold, response) pairs"
    right = sum(r["expected"] for r in rs)
    assert 0.4 <= right / len(rs) <= 0.6, f"{right} of {len(rs)} labelled right"
    per_category = Counter(r["category"] for r in rs)
    assert len(per_category) >= 20 and min(per_category.values()) >= 15, per_category
