"""The held-out corpus of real model output (tests/data/math_real_output.jsonl, made by
scripts/make_real_output_corpus.py) is well-formed. Only its shape is tested here: it is a
benchmark for scripts/bench_verifiers.py, not a tuning target, so the checker's accuracy on it is
reported there and never asserted."""
import json
from pathlib import Path

PATH = Path(__file__).parent / "data" / "math_real_output.jsonl"
FIELDS = {"source": str, "model": str, "gold": str, "response": str, "label": bool, "how": str}


def rows() -> list[dict]:
    return [json.loads(line) for line in PATH.open(encoding="utf-8") if line.strip()]


def test_fields_and_types():
    for i, r in enumerate(rows()):
        assert set(r) == set(FIELDS), f"row {i}: fields {sorted(r)}"
        for name, typ in FIELDS.items():
            assert type(r[name]) is typ, f"row {i}: {name} is {type(r[name]).__name__}, not {typ.__name__}"
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
