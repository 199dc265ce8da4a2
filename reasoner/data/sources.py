"""Where rows come from and how a row becomes a ``Problem``.

Rows come from local files (``.jsonl``, ``.json``, ``.parquet``, ``.csv``, each optionally
``.gz``) or from the Hugging Face hub (``datasets.load_dataset``). A ``Schema`` says which
fields hold the problem, the answer and the id, and which *format* turns them into a
``Problem``; ``detect_schema`` guesses it from the first record (``problem``/``answer``,
GSM8K's ``#### 42``, MATH's ``\\boxed{}`` in ``solution``, HumanEval, MBPP) and
``DataConfig.field_map`` overrides any part of it.

A malformed row raises ``DataError`` naming the file, the line and what is wrong; with
``skip_bad=True`` it is skipped, a warning is issued, and the returned ``Problems`` list
carries ``skipped`` (a count) and ``errors`` (the messages). Nothing is dropped silently.
"""
from __future__ import annotations

import csv
import gzip
import io
import json
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, NamedTuple

from reasoner.registry import Registry
from reasoner.types import Problem

FILE_SUFFIXES = (".jsonl", ".json", ".parquet", ".csv")


class DataError(ValueError):
    """Bad data or a bad data spec; the message names the file/line or the valid choices."""


class RawRow(NamedTuple):
    where: str  # "path:line" or "hub-id[split] row i", for error messages
    index: int  # 0-based record index in its source
    record: dict[str, Any] | None  # None when the row could not be parsed
    error: str | None  # what is wrong when record is None


class Problems(list):
    """A ``list[Problem]`` that also reports what was skipped (``skip_bad_rows``)."""

    def __init__(self, items: Iterable[Problem] = (), skipped: int = 0, errors: list[str] | None = None):
        super().__init__(items)
        self.skipped = skipped
        self.errors = list(errors or [])


# ---------------------------------------------------------------- reading files

def base_suffix(path: str | Path) -> str:
    """``.jsonl`` for ``x.jsonl.gz``; the suffix that decides the parser."""
    p = Path(path)
    return Path(p.stem).suffix.lower() if p.suffix.lower() == ".gz" else p.suffix.lower()


def is_data_file(path: str | Path) -> bool:
    return base_suffix(path) in FILE_SUFFIXES


def _open_text(path: Path):
    if path.suffix.lower() == ".gz":
        return gzip.open(path, "rt", encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


def _read_jsonl(path: Path) -> Iterator[RawRow]:
    with _open_text(path) as f:
        index = 0
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                yield RawRow(where, index, None, f"invalid JSON ({e.msg} at column {e.colno})")
            else:
                yield _as_record(where, index, rec)
            index += 1


def _as_record(where: str, index: int, rec: Any) -> RawRow:
    if isinstance(rec, dict):
        return RawRow(where, index, rec, None)
    return RawRow(where, index, None, f"expected a JSON object, got {type(rec).__name__}")


def _read_json(path: Path) -> Iterator[RawRow]:
    with _open_text(path) as f:
        try:
            data = json.load(f)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{e.lineno}: invalid JSON ({e.msg} at column {e.colno})") from None
    if isinstance(data, dict):  # {"data": [...]} / {"rows": [...]} / {"test": [...]}: the one list inside
        lists = [v for v in data.values() if isinstance(v, list)]
        if len(lists) != 1:
            raise DataError(f"{path}: expected a JSON list of objects (or an object holding exactly one list)")
        data = lists[0]
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of objects, got {type(data).__name__}")
    for i, rec in enumerate(data):
        yield _as_record(f"{path}: record {i}", i, rec)


def _read_csv(path: Path) -> Iterator[RawRow]:
    with _open_text(path) as f:
        reader = csv.DictReader(f)
        for i, rec in enumerate(reader):
            where = f"{path}:{reader.line_num}"
            if None in rec:  # more cells than header fields
                yield RawRow(where, i, None, f"{len(reader.fieldnames or [])} columns in the header, more in this row")
            else:
                yield RawRow(where, i, dict(rec), None)


def _read_parquet(path: Path) -> Iterator[RawRow]:
    import pyarrow.parquet as pq

    src: Any = path
    if path.suffix.lower() == ".gz":
        with gzip.open(path, "rb") as f:
            src = io.BytesIO(f.read())
    for i, rec in enumerate(pq.read_table(src).to_pylist()):
        yield RawRow(f"{path}: row {i}", i, rec, None)


READERS: dict[str, Callable[[Path], Iterator[RawRow]]] = {
    ".jsonl": _read_jsonl, ".json": _read_json, ".csv": _read_csv, ".parquet": _read_parquet,
}


def read_file(path: str | Path) -> Iterator[RawRow]:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file not found: {path}")
    suffix = base_suffix(path)
    if suffix not in READERS:
        raise DataError(f"{path}: unsupported file type {suffix!r}; supported: "
                        + ", ".join(f"{s}[.gz]" for s in FILE_SUFFIXES))
    return READERS[suffix](path)


def read_hub(hub_id: str, split: str, config: str | None = None) -> Iterator[RawRow]:
    """Rows of a hub dataset (needs network or a populated HF cache)."""
    import datasets

    ds = datasets.load_dataset(hub_id, config, split=split)
    for i, rec in enumerate(ds):
        yield RawRow(f"{hub_id}[{split}] row {i}", i, dict(rec), None)


# ---------------------------------------------------------------- answer extraction

def last_boxed(text: str) -> str | None:
    """The last ``\\boxed{}`` of a solution: the math verifier's extractor (one implementation)."""
    from reasoner.verifiers.math.extract import last_boxed as _last_boxed

    return _last_boxed(text)


def gsm8k_answer(text: str) -> str | None:
    """The number after the last ``####``, thousands separators removed."""
    if "####" not in text:
        return None
    ans = text.rsplit("####", 1)[1].strip().replace(",", "")
    return ans or None


def plain_answer(value: Any) -> str | None:
    if value is None or isinstance(value, (list, dict)):
        return None
    ans = str(value).strip()
    return ans or None


# ---------------------------------------------------------------- schemas and formats

@dataclass(frozen=True)
class Schema:
    """Which fields hold what, and which format builds the ``Problem``."""

    format: str = "plain"  # a name in FORMATS
    problem: str = "problem"  # field holding the problem text (or chat messages)
    answer: str = "answer"  # field holding the answer (plain, gsm8k) or the solution (boxed)
    id: str | None = None  # field holding a stable id; None = the row index


class Built(NamedTuple):
    prompt: str | list[dict[str, str]]
    answer: str | None
    tests: dict[str, Any] | None
    verifier: str


Format = Callable[[dict[str, Any], Schema], Built]
FORMATS: Registry[Format] = Registry("data format")


def _field(rec: dict[str, Any], name: str, role: str | None = None) -> Any:
    """``rec[name]``; a missing field names the fields there are and, for a mappable ``role``, the fix."""
    if name not in rec:
        hint = (f"; if another field holds the {role}, set data.field_map={{{role}: <that field>}}"
                if role and rec else "")
        raise ValueError(f"missing field {name!r} (fields: {', '.join(map(str, rec))}){hint}")
    return rec[name]


def _prompt(rec: dict[str, Any], schema: Schema) -> str | list[dict[str, str]]:
    value = _field(rec, schema.problem, "problem")
    if isinstance(value, list) and value and all(isinstance(m, dict) and "role" in m and "content" in m for m in value):
        return [{"role": str(m["role"]), "content": str(m["content"])} for m in value]
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"field {schema.problem!r} must be non-empty text or chat messages, got {value!r:.60}")
    return value


def _math(extract: Callable[[Any], str | None], what: str) -> Format:
    def build(rec: dict[str, Any], schema: Schema) -> Built:
        prompt = _prompt(rec, schema)
        answer = extract(_field(rec, schema.answer, "answer"))
        if answer is None:
            raise ValueError(f"field {schema.answer!r}: {what} (value {str(rec[schema.answer])[-60:]!r})")
        return Built(prompt, answer, None, "math")
    return build


FORMATS.register("plain")(_math(plain_answer, "empty or not a scalar answer"))
FORMATS.register("gsm8k")(_math(lambda v: gsm8k_answer(v) if isinstance(v, str) else None, "no '#### <answer>'"))
FORMATS.register("boxed")(_math(lambda v: last_boxed(v) if isinstance(v, str) else None, "no \\boxed{...} answer"))


@FORMATS.register("humaneval")
def _humaneval(rec: dict[str, Any], schema: Schema) -> Built:
    prompt, test, entry = (_field(rec, k) for k in (schema.problem, "test", "entry_point"))
    if not all(isinstance(x, str) and x for x in (prompt, test, entry)):
        raise ValueError("prompt, test and entry_point must be non-empty strings")
    tests = {"format": "humaneval", "prompt": prompt, "test": test, "entry_point": entry}
    return Built(prompt, None, tests, "code")


@FORMATS.register("mbpp")
def _mbpp(rec: dict[str, Any], schema: Schema) -> Built:
    text, test_list = _field(rec, schema.problem), _field(rec, "test_list")
    if isinstance(test_list, str):  # CSV cells hold the list as JSON text
        test_list = json.loads(test_list)
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"field {schema.problem!r} must be non-empty text")
    if not isinstance(test_list, list) or not test_list or not all(isinstance(t, str) for t in test_list):
        raise ValueError("field 'test_list' must be a non-empty list of assert statements")
    prompt = text.strip() + "\nYour code should pass these tests:\n" + "\n".join(test_list)
    tests = {"format": "mbpp", "test_list": list(test_list), "setup": str(rec.get("test_setup_code") or "")}
    return Built(prompt, None, tests, "code")


_PROBLEM_FIELDS = ("problem", "question", "prompt", "input", "text", "instruction")
_ID_FIELDS = ("id", "unique_id", "task_id", "idx", "problem_id")
FIELD_MAP_KEYS = ("problem", "answer", "solution", "id", "format")


def detect_schema(rec: dict[str, Any], field_map: dict[str, str] | None = None) -> Schema:
    """Guess the schema from the first record; ``field_map`` entries win."""
    fm = dict(field_map or {})
    bad = sorted(set(fm) - set(FIELD_MAP_KEYS))
    if bad:
        raise DataError(f"unknown data.field_map key(s) {bad}; valid keys: {', '.join(FIELD_MAP_KEYS)}")
    keys = set(rec)
    id_field = fm.get("id") or next((k for k in _ID_FIELDS if k in keys), None)
    if {"prompt", "test", "entry_point"} <= keys and "format" not in fm:
        return Schema("humaneval", fm.get("problem", "prompt"), "test", id_field)
    if "test_list" in keys and "format" not in fm:
        return Schema("mbpp", fm.get("problem") or next((k for k in ("text", "prompt") if k in keys), "text"), "test_list", id_field)
    problem = fm.get("problem") or next((k for k in _PROBLEM_FIELDS if k in keys), "problem")
    if "solution" in fm:
        return Schema(fm.get("format", "boxed"), problem, fm["solution"], id_field)
    answer = fm.get("answer") or ("answer" if "answer" in keys else "solution" if "solution" in keys else "answer")
    fmt = fm.get("format")
    if fmt is None:
        value = rec.get(answer)
        fmt = "boxed" if answer == "solution" else "gsm8k" if isinstance(value, str) and "####" in value else "plain"
    FORMATS.get(fmt)  # unknown format -> KeyError listing the valid ones
    return Schema(fmt, problem, answer, id_field)


def build_problems(rows: Iterable[RawRow], source: str, schema: Schema | None = None,
                   field_map: dict[str, str] | None = None, skip_bad: bool = False,
                   keep: Callable[[dict[str, Any]], bool] | None = None, meta: dict[str, Any] | None = None) -> Problems:
    """Rows -> ``Problems``; the schema is detected from the first good row unless given."""
    out, errors = [], []
    for row in rows:
        try:
            if row.record is None:
                raise ValueError(row.error)
            if keep is not None and not keep(row.record):
                continue
            if schema is None:
                schema = detect_schema(row.record, field_map)
            out.append(_one(row, schema, source, meta))
        except DataError:
            raise
        except (ValueError, TypeError) as e:
            msg = f"{row.where}: {e}"
            if not skip_bad:
                raise DataError(msg + " (set data.skip_bad_rows=true to skip bad rows)") from None
            errors.append(msg)
    if errors:
        warnings.warn(f"{source}: skipped {len(errors)} malformed row(s); first: {errors[0]}", stacklevel=2)
    return Problems(out, skipped=len(errors), errors=errors)


def _one(row: RawRow, schema: Schema, source: str, meta: dict[str, Any] | None) -> Problem:
    rec = row.record or {}
    built = FORMATS.get(schema.format)(rec, schema)
    ident = rec.get(schema.id) if schema.id else None
    ident = row.index if ident is None or ident == "" else ident
    extra = {k: v for k, v in rec.items() if k != schema.problem}  # raw answer/solution kept for few-shot demos
    return Problem(id=f"{source}/{ident}", prompt=built.prompt, answer=built.answer, tests=built.tests,
                   verifier=str(rec.get("verifier") or built.verifier), source=source, meta={**extra, **(meta or {}), "index": row.index})


def with_schema_overrides(schema: Schema, field_map: dict[str, str] | None) -> Schema:
    """A named set's schema with the user's ``field_map`` applied on top."""
    fm = dict(field_map or {})
    bad = sorted(set(fm) - set(FIELD_MAP_KEYS))
    if bad:
        raise DataError(f"unknown data.field_map key(s) {bad}; valid keys: {', '.join(FIELD_MAP_KEYS)}")
    answer = fm.get("solution") or fm.get("answer") or schema.answer
    return replace(schema, format=fm.get("format", schema.format), problem=fm.get("problem", schema.problem),
                   answer=answer, id=fm.get("id", schema.id))
