"""Loaders on the real benchmark files ($REASONER_DATA_DIR, else ../shared/data), local formats, bad rows, render,
overlap."""
from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import pytest

from reasoner.config import DataConfig
from reasoner.data import DATASETS, DataError, load_problems, render
from reasoner.data.overlap import find_overlap, warn_overlap
from reasoner.types import Problem

from _paths import SHARED_DATA as SHARED
needs_data = pytest.mark.skipif(not SHARED.is_dir(), reason=f"benchmark copies not found in {SHARED}")


@pytest.fixture(scope="module")
def cfg() -> DataConfig:
    return DataConfig(data_dir=str(SHARED))


# ---------------------------------------------------------------- real files (counts from SOURCES.md)

COUNTS = [("aime24", "test", 30), ("aime25", "test", 30), ("amc23", "test", 40), ("math500", "test", 500),
          ("gsm8k", "train", 7473), ("gsm8k", "test", 1319), ("math", "test", 5000),
          ("math", "test_minus_math500", 4500), ("humaneval", "test", 164), ("mbpp", "test", 500)]


@needs_data
@pytest.mark.parametrize("name,split,count", COUNTS)
def test_record_counts(cfg, name, split, count):
    problems = load_problems(name, split, cfg)
    assert len(problems) == count and problems.skipped == 0
    assert len({p.id for p in problems}) == count  # ids are unique
    assert all(p.source == name for p in problems)


@needs_data
@pytest.mark.parametrize("name", ["aime24", "aime25"])
def test_aime_answers_are_integers_0_999(cfg, name):
    answers = [p.answer for p in load_problems(name, "test", cfg)]
    assert all(re.fullmatch(r"\d{1,3}", a) for a in answers), answers
    assert all(0 <= int(a) <= 999 for a in answers)


@needs_data
def test_aime25_answers_match_sources_md(cfg):
    official = [70, 588, 16, 117, 279, 504, 821, 77, 62, 81, 259, 510, 204, 60, 735, 468, 49, 82, 106, 336, 293, 237,
                610, 149, 907, 113, 19, 248, 104, 240]
    assert [int(p.answer) for p in load_problems("aime25", "test", cfg)] == official


@needs_data
def test_amc23_answers_keep_float_form(cfg):
    answers = [p.answer for p in load_problems("amc23", "test", cfg)]
    assert answers[0] == "27.0" and {"-1.0", "3159.0", "1625.0"} <= set(answers)
    assert all(re.fullmatch(r"-?\d+\.\d+", a) for a in answers)


@needs_data
def test_gsm8k_answer_is_the_number_after_hashes(cfg):
    problems = load_problems("gsm8k", "test", cfg)
    raw = [json.loads(line)["answer"] for line in open(SHARED / "gsm8k/test.jsonl")]
    for p, r in zip(problems, raw):
        assert p.answer == r.split("####")[-1].strip().replace(",", "")
        assert re.fullmatch(r"-?\d+(\.\d+)?", p.answer), p.answer
    assert problems[0].answer == "18" and problems[0].prompt.startswith("Janet")


@needs_data
def test_math_answers_from_last_boxed_match_math500_answers(cfg):
    full = load_problems("math", "test", cfg)
    assert all(p.answer for p in full)  # every solution has a \boxed{}
    by_text = {p.prompt.strip(): p.answer for p in full}
    m500 = load_problems("math500", "test", cfg)
    # MATH-500 ships its own answer field; the boxed extraction from MATH must agree on all 500
    assert all(by_text[p.prompt.strip()] == p.answer for p in m500)
    assert full[0].answer == "2"  # "... has $\\boxed{2}$ vertical asymptotes."


@needs_data
def test_code_sets_follow_the_code_verifier_schema(cfg):
    he = load_problems("humaneval", "test", cfg)[0]
    assert he.verifier == "code" and he.id == "humaneval/HumanEval/0"
    assert set(he.tests) == {"format", "prompt", "test", "entry_point"} and he.tests["format"] == "humaneval"
    assert he.tests["entry_point"] == "has_close_elements"
    mb = load_problems("mbpp", "test", cfg)
    assert [p.meta["task_id"] for p in (mb[0], mb[-1])] == [11, 510]
    assert set(mb[0].tests) == {"format", "test_list", "setup"} and mb[0].tests["format"] == "mbpp"
    assert len(load_problems("mbpp", "prompt", cfg)) == 10


@needs_data
def test_gzipped_humaneval_equals_plain(tmp_path, cfg):
    (tmp_path / "humaneval").mkdir()
    (tmp_path / "humaneval" / "HumanEval.jsonl.gz").write_bytes((SHARED / "humaneval/HumanEval.jsonl.gz").read_bytes())
    gz = load_problems("humaneval", "test", DataConfig(data_dir=str(tmp_path)))
    assert gz == load_problems("humaneval", "test", cfg)


def test_unknown_split_and_missing_copy_are_clear(tmp_path, monkeypatch):
    with pytest.raises(DataError, match="no split 'train'.*test"):
        load_problems("aime24", "train", DataConfig(data_dir=str(tmp_path)))
    with pytest.raises(DataError, match="data file not found"):
        load_problems(str(tmp_path / "nope.jsonl"), "train", DataConfig())
    assert {"gsm8k", "math", "math500", "aime24", "aime25", "amc23", "humaneval", "mbpp", "synthetic"} <= set(DATASETS)


def test_env_var_is_the_fallback_dir(tmp_path, monkeypatch):
    (tmp_path / "aime24").mkdir()
    (tmp_path / "aime24" / "test.jsonl").write_text('{"id": 1, "problem": "p?", "answer": "007"}\n')
    monkeypatch.setenv("REASONER_DATA_DIR", str(tmp_path))
    (p,) = load_problems("aime24", "test", DataConfig())
    assert (p.id, p.answer, p.meta["instruction"]) == ("aime24/1", "007", DATASETS.get("aime24").instruction)


# ---------------------------------------------------------------- local formats

def _write(path: Path, rows: list[dict], gz: bool = False) -> Path:
    text = "".join(json.dumps(r) + "\n" for r in rows)
    if gz:
        with gzip.open(path, "wt") as f:
            f.write(text)
    else:
        path.write_text(text)
    return path


ROWS = [{"problem": "1+1=", "answer": "2"}, {"problem": "2+2=", "answer": 4}]


def test_local_formats_all_load_the_same(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    want = [("1+1=", "2"), ("2+2=", "4")]
    files = [_write(tmp_path / "a.jsonl", ROWS), _write(tmp_path / "b.jsonl.gz", ROWS, gz=True)]
    (tmp_path / "c.json").write_text(json.dumps({"data": ROWS}))
    (tmp_path / "d.csv").write_text("problem,answer\n1+1=,2\n2+2=,4\n")
    pq.write_table(pa.Table.from_pylist([{"problem": r["problem"], "answer": str(r["answer"])} for r in ROWS]),
                   tmp_path / "e.parquet")
    files += [tmp_path / "c.json", tmp_path / "d.csv", tmp_path / "e.parquet"]
    for f in files:
        got = load_problems(str(f), "train", DataConfig())
        assert [(p.prompt, p.answer) for p in got] == want, f
        assert all(p.verifier == "math" and p.source == f.name for p in got)


def test_gsm8k_and_math_formats_detected_and_field_map(tmp_path):
    g = _write(tmp_path / "g.jsonl", [{"question": "How many?", "answer": "2 + 3 = <<2+3=5>>5\n#### 1,005"}])
    assert load_problems(str(g), "train", DataConfig())[0].answer == "1005"
    m = _write(tmp_path / "m.jsonl", [{"problem": "x?", "solution": "so $\\boxed{\\frac{1}{2}}$."}])
    assert load_problems(str(m), "train", DataConfig())[0].answer == "\\frac{1}{2}"
    c = _write(tmp_path / "c.jsonl", [{"q": "Q1", "final": 7, "uid": "a"}])
    (p,) = load_problems(str(c), "train", DataConfig(field_map={"problem": "q", "answer": "final", "id": "uid"}))
    assert (p.id, p.prompt, p.answer) == ("c.jsonl/a", "Q1", "7")
    with pytest.raises(DataError, match="unknown data.field_map key.*valid keys"):
        load_problems(str(c), "train", DataConfig(field_map={"question": "q"}))


def test_chat_message_prompts_are_kept(tmp_path):
    f = _write(tmp_path / "chat.jsonl", [{"prompt": [{"role": "user", "content": "Hi?"}], "answer": "1"}])
    assert load_problems(str(f), "train", DataConfig())[0].prompt == [{"role": "user", "content": "Hi?"}]


def test_malformed_row_names_file_line_and_problem(tmp_path):
    f = tmp_path / "bad.jsonl"
    f.write_text('{"problem": "a", "answer": "1"}\n{"problem": "b"\n{"problem": "c"}\n{"problem": "d", "answer": "4"}\n')
    with pytest.raises(DataError, match=r"bad\.jsonl:2: invalid JSON"):
        load_problems(str(f), "train", DataConfig())
    with pytest.warns(UserWarning, match="skipped 2 malformed"):
        got = load_problems(str(f), "train", DataConfig(skip_bad_rows=True))
    assert [p.answer for p in got] == ["1", "4"] and got.skipped == 2
    assert re.search(r"bad\.jsonl:3: missing field 'answer'", got.errors[1])


def test_gsm8k_row_without_hashes_fails_with_line(tmp_path):
    f = _write(tmp_path / "g.jsonl", [{"question": "q", "answer": "x\n#### 3"}, {"question": "q2", "answer": "no marker"}])
    with pytest.raises(DataError, match=r"g\.jsonl:2: field 'answer': no '#### <answer>'"):
        load_problems(str(f), "train", DataConfig())


# ---------------------------------------------------------------- synthetic + render

class NoChatTok:
    chat_template = None


class ChatTok:
    chat_template = "x"

    def apply_chat_template(self, messages, tokenize, add_generation_prompt):
        assert not tokenize and add_generation_prompt
        return "".join(f"<{m['role']}>{m['content']}" for m in messages) + "<assistant>"


def test_synthetic_uses_make_problems_and_renders_bare():
    from reasoner.data.synthetic import make_problems

    cfg = DataConfig(synthetic_size=50, eval_size=10, seed=3)
    train = load_problems("synthetic", "train", cfg)
    assert train == make_problems("train", n=50, seed=3, kinds="add,sub")
    test = load_problems("synthetic", "test", cfg)
    assert len(test) == 256  # max(eval_size, 256)
    assert all(render(p, NoChatTok(), cfg) == p.prompt for p in test[:20])  # exactly the bare prompt


def test_render_instruction_system_chat_and_errors():
    p = Problem("x/1", "What is 2+2?", "4", meta={"instruction": "Box it."})
    cfg = DataConfig()
    assert render(p, NoChatTok(), cfg) == "What is 2+2?\nBox it."  # the set's default instruction
    assert render(p, NoChatTok(), DataConfig(instruction="")) == "What is 2+2?"
    assert render(p, NoChatTok(), cfg, default_instruction="Go.") == "What is 2+2?\nGo."
    assert render(p, ChatTok(), DataConfig(system_prompt="S")) == "<system>S<user>What is 2+2?\nBox it.<assistant>"
    assert render(p, ChatTok(), DataConfig(template="plain")) == "What is 2+2?\nBox it."
    with pytest.raises(ValueError, match="no chat template"):
        render(p, NoChatTok(), DataConfig(template="chat"))
    with pytest.raises(ValueError, match="valid choices"):
        render(p, NoChatTok(), DataConfig(template="fancy"))


@needs_data
def test_few_shot_examples_from_gsm8k_train(cfg):
    import dataclasses

    shot_cfg = dataclasses.replace(cfg, few_shot=2)
    p = load_problems("gsm8k", "test", shot_cfg)[0]
    text = render(p, NoChatTok(), shot_cfg)
    blocks = text.split("\n\n")
    assert blocks[0].startswith("Natalia sold clips") and "\\boxed{72}" in text  # gsm8k train #0, answer 72
    assert text.endswith(p.prompt + "\n" + DATASETS.get("gsm8k").instruction)
    with pytest.raises(DataError, match="no few-shot source"):
        load_problems("aime24", "test", shot_cfg)


# ---------------------------------------------------------------- overlap

def test_overlap_exact_ngram_and_boilerplate():
    words = " ".join(f"w{i}" for i in range(30))
    train = [Problem("t/0", "What is  TWO plus two?", "4"), Problem("t/1", "Preamble. " + words, "1")]
    evals = {"e": [Problem("e/0", "what is two plus two", "4"),  # exact after normalisation
                   Problem("e/1", words + " extra", "1"),  # 30 of 31 words in shared 13-grams
                   Problem("e/2", " ".join(f"w{i}" for i in range(13)) + " " + " ".join(f"z{i}" for i in range(40)),
                           "1")]}  # one shared 13-gram but only 13/53 words covered: boilerplate, not a copy
    report = find_overlap(train, evals, n=13)
    assert [(h.eval_id, h.train_id, h.kind) for h in report.hits["e"]] == [("e/0", "t/0", "exact"),
                                                                          ("e/1", "t/1", "ngram")]
    with pytest.warns(UserWarning, match="overlaps"):
        warn_overlap(train, evals)


@needs_data
def test_full_math_test_contains_all_of_math500(cfg):
    m500 = load_problems("math500", "test", cfg)
    report = find_overlap(load_problems("math", "test", cfg), {"math500": m500})
    assert report.count("math500") == 500 and all(h.kind == "exact" for h in report.hits["math500"])
    clean = find_overlap(load_problems("math", "test_minus_math500", cfg), {"math500": m500})
    assert not any(h.kind == "exact" for h in clean.hits["math500"])
