"""The held-out corpus of real model output (tests/data/math_real_output.jsonl, made by
scripts/make_real_output_corpus.py) is well-formed. Only its shape is tested here: it is a
benchmark for scripts/bench_verifiers.py, not a tuning target, so the checker's accuracy on it is
reported there and never asserted."""
from pathlib import Path

import _corpus  # tests/_corpus.py

PATH = Path(__file__).parent / "data" / "math_real_output.jsonl"
FIELDS = {"source": str, "model": str, "gold": str, "response": str, "label": bool, "how": str}


def rows() -> list[dict]:
    return _corpus.rows(PATH)


def test_fields_and_types():
    rs = rows()
    _corpus.check_fields(rs, FIELDS)
    for i, r in enumerate(rs):
        assert r["how"] in ("agree", "hand"), f"row {i}: how={r['how']!r}"
        assert r["source"] and r["model"] and r["gold"].strip(), f"row {i}: empty source, model or gold"


def test_size_mix_and_no_duplicates():
    rs = rows()
    assert len(rs) >= 400
    pairs = [(r["gold"], r["response"]) for r in rs]
    assert len(set(pairs)) == len(pairs), "duplicate (gold, response) pairs"
    labels = [r["label"] for r in rs]
    assert any(labels) and not all(labels)
    assert {r["model"] for r in rs} >= {"tiny", "SmolLM2-135M-Instruct"}
