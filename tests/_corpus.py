"""Reading the checker's benchmark corpora (tests/data/*.jsonl) and checking their rows' shape."""
from __future__ import annotations

import json
from pathlib import Path


def rows(path: Path) -> list[dict]:
    """The JSON object on each non-blank line of ``path``."""
    return [json.loads(line) for line in path.open(encoding="utf-8") if line.strip()]


def check_fields(rs: list[dict], fields: dict[str, type]) -> None:
    """Every row has exactly ``fields`` (name: type), each of exactly that type."""
    for i, r in enumerate(rs):
        assert set(r) == set(fields), f"row {i}: fields {sorted(r)}"
        for name, typ in fields.items():
            assert type(r[name]) is typ, f"row {i}: {name} is {type(r[name]).__name__}, not {typ.__name__}"
