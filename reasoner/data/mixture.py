"""Training data from several sources: ``data.train`` is one source or a weighted list of them.

    data.train=gsm8k                          # one source, weight 1: exactly as before
    data.train=gsm8k:0.7,mbpp:0.3             # the compact form: name:weight, split at each item's last ':'
    data:                                     # YAML (or the same list as a JSON/YAML string on the command line)
      train:
        - {name: gsm8k, weight: 0.7}
        - {name: mbpp, weight: 0.3, split: train, label: code}

A source's ``name`` is what ``data.train`` always took (a named set, a local file or directory, a
hub id); ``weight`` is its share of the training problems (>= 0, need not sum to 1); ``split``,
``field_map`` and ``verifier`` override ``data.train_split``, ``data.field_map`` and the rows' own
verifier for that source; ``label`` names its metrics (``source/<label>/...``; default: the set's
name or the file's stem). With several sources each problem's ``Problem.source`` is its label and
batches are drawn by weight (``reasoner.runtime.MixedStream``).
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from reasoner.errors import ConfigError
from reasoner.types import Problem

from . import load_problems
from .named import DATASETS
from .sources import DataError, Problems, is_data_file

EXAMPLE = "data.train=gsm8k:0.7,mbpp:0.3 or data.train='[{name: gsm8k, weight: 0.7}, {name: mbpp, weight: 0.3}]'"
FIELDS = ("name", "weight", "split", "field_map", "verifier", "label")
_LABEL = re.compile(r"[\w.+-]+")


@dataclass(frozen=True)
class Source:
    """One entry of ``data.train``."""

    name: str  # a named set, a local file or directory, or a hub id
    weight: float = 1.0  # share of the training problems, relative to the other sources' (>= 0)
    split: str | None = None  # None: data.train_split
    field_map: dict[str, str] | None = None  # None: data.field_map
    verifier: str | None = None  # scores every problem of this source; None: each row's own
    label: str = ""  # its metrics are source/<label>/...; "" = default_label(name)
    key: str = "data.train"  # how messages name it: data.train, or data.train[i] in a list

    @property
    def where(self) -> str:
        return f"{self.key}={self.name!r}"


def parse_sources(value: Any, key: str = "data.train") -> list[Source]:
    """``data.train`` as sources: a bare string is one source of weight 1; ``a:0.7,b:0.3``; a list of
    names or ``{name, weight, ...}`` mappings (or such a list as JSON/YAML text). ConfigError names
    ``key`` and the fix: no source, an unknown field, a negative or non-number weight, weights that
    sum to 0, a misspelt named set, two sources with one label."""
    items = _items(value, key)
    if not items:
        raise ConfigError(f"{key} is empty; name a training set, e.g. data.train=synthetic or {EXAMPLE}")
    many = len(items) > 1
    sources = [_source(item, f"{key}[{i}]" if many else key) for i, item in enumerate(items)]
    if not sum(s.weight for s in sources) > 0:
        raise ConfigError(f"{key}: the weights sum to 0 ({', '.join(f'{s.name}:{s.weight:g}' for s in sources)}); "
                          f"give at least one source a weight > 0, e.g. {EXAMPLE}")
    if many:
        _check_labels(sources, key)
    return sources


def _items(value: Any, key: str) -> list[Any]:
    """The entries of ``data.train``: strings or mappings."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith(("[", "{")):
            try:
                return _items(yaml.safe_load(text), key)
            except yaml.YAMLError as e:
                raise ConfigError(f"{key}: cannot parse {text!r} as a YAML/JSON list ({' '.join(str(e).split())}); "
                                  f"e.g. {EXAMPLE}") from None
        if text and (text in DATASETS or Path(text).expanduser().exists()):
            return [text]  # one set or file, even with a ',' in its name
        return [x.strip() for x in text.split(",") if x.strip()]
    if isinstance(value, Mapping):
        return [value]
    if isinstance(value, Sequence):
        return list(value)
    if value is None:
        return []
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return [str(value)]  # a file or directory named like a number, parsed as one on the command line
    raise ConfigError(f"{key}: expected a source name, name:weight pairs or a list of {{name, weight}} mappings, "
                      f"got {value!r}; e.g. {EXAMPLE}")


def _source(item: Any, key: str) -> Source:
    if isinstance(item, str):
        name, weight = _split_weight(item)
        fields: dict[str, Any] = {"name": name, "weight": weight}
    elif isinstance(item, Mapping):
        fields = {str(k): v for k, v in item.items()}
        unknown = sorted(set(fields) - set(FIELDS))
        if unknown:
            close = difflib.get_close_matches(unknown[0], FIELDS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{key}: unknown field {unknown[0]!r}{hint}; a source takes {', '.join(FIELDS)}")
    else:
        raise ConfigError(f"{key}: expected a source name or a {{name, weight}} mapping, got {item!r}")
    name = fields.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"{key}: every source needs a name (a named set, a file or a hub id), got {name!r}")
    _check_name(name.strip(), key)
    for opt in ("split", "verifier", "label"):
        if fields.get(opt) is not None and not isinstance(fields[opt], str):
            raise ConfigError(f"{key}.{opt}: expected text, got {fields[opt]!r}")
    fm = fields.get("field_map")
    if fm is not None and not isinstance(fm, Mapping):
        raise ConfigError(f"{key}.field_map: expected a mapping such as {{problem: question}}, got {fm!r}")
    return Source(name=name.strip(), weight=_weight(fields.get("weight", 1.0), key, name),
                  split=fields.get("split"), field_map=None if fm is None else {str(k): str(v) for k, v in fm.items()},
                  verifier=fields.get("verifier"), label=fields.get("label") or default_label(name.strip()), key=key)


def _split_weight(item: str) -> tuple[str, Any]:
    """``name:0.7`` -> (name, "0.7"): at the last ':', when a number follows it or a named set or data
    file precedes it (``hub:owner/name:config`` stays one name of weight 1)."""
    if item in DATASETS or Path(item).expanduser().exists():
        return item, 1.0
    name, sep, tail = item.rpartition(":")
    try:
        float(tail)
    except ValueError:  # no weight, unless a set or file precedes the ':' (then the weight is bad)
        return (name, tail) if name in DATASETS or is_data_file(name) else (item, 1.0)
    return (name, tail) if sep and name else (item, 1.0)


def _weight(value: Any, key: str, name: str) -> float:
    try:
        if isinstance(value, bool):
            raise TypeError
        w = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{key}: the weight of {name!r} must be a number, got {value!r}; e.g. {EXAMPLE}") from None
    if not math.isfinite(w) or w < 0:
        what = "is negative" if w < 0 else "is not finite"
        raise ConfigError(f"{key}: the weight of {name!r} ({w:g}) {what}; weights are shares >= 0, e.g. {EXAMPLE}")
    return w


def _check_name(name: str, key: str) -> None:
    """A bare word that is no named set, no file and no hub id (owner/name) but close to a named set:
    a typo, reported now rather than after a failed hub download."""
    if name in DATASETS or "/" in name or ":" in name or is_data_file(name) or Path(name).expanduser().exists():
        return
    close = difflib.get_close_matches(name, DATASETS.names(), n=1, cutoff=0.75)
    if close:
        raise ConfigError(f"{key}: unknown training set {name!r} (did you mean {close[0]!r}?); named sets: "
                          f"{', '.join(DATASETS.names())} (`reasoner list`), or a local file, or a hub id owner/name")


def default_label(name: str) -> str:
    """A named set's name; a file's stem (``code.jsonl.gz`` -> ``code``); a hub id's last part."""
    if name in DATASETS:
        return name
    base = name.removeprefix("hub:").rstrip("/").rsplit("/", 1)[-1]
    if is_data_file(base):
        base = Path(base.removesuffix(".gz").removesuffix(".GZ")).stem
    return re.sub(r"[^\w.+-]+", "_", base) or "source"


def _check_labels(sources: list[Source], key: str) -> None:
    seen: dict[str, Source] = {}
    for s in sources:
        if not _LABEL.fullmatch(s.label):
            raise ConfigError(f"{s.key}: label {s.label!r} must be letters, digits, '_', '-', '.' or '+' (it names "
                              f"the metrics source/<label>/...)")
        if s.label in seen:
            raise ConfigError(f"{key}: {seen[s.label].key} and {s.key} both get the metric label {s.label!r}; give "
                              f"one a label of its own, e.g. {{name: {s.name}, weight: {s.weight:g}, label: "
                              f"{s.label}_2}}")
        seen[s.label] = s


def weights(sources: list[Source]) -> dict[str, float]:
    """label -> weight for the stream (``reasoner.runtime.problem_stream``); one source: one entry."""
    return {s.label: s.weight for s in sources}


def load_sources(sources: list[Source], d: Any) -> list[Problems]:
    """Each source's training problems (``d``: the data section): split, field map and verifier
    overridden as the source says; with several sources ``Problem.source`` becomes the label.
    A source that cannot be loaded, or loads empty, is a DataError naming it."""
    out = []
    for s in sources:
        cfg = dataclasses.replace(d, field_map=s.field_map) if s.field_map is not None else d
        split = s.split or d.train_split
        try:
            problems = load_problems(s.name, split, cfg)
        except DataError as e:
            raise DataError(f"{s.where}: {e.args[0]}") from None
        if not problems:
            skipped = " (every row was skipped as malformed)" if problems.skipped else ""
            raise DataError(f"{s.where} (split {split!r}): the training set is empty{skipped}")
        out.append(_relabel(problems, s, len(sources) > 1))
    return out


def _relabel(problems: Problems, s: Source, mixed: bool) -> Problems:
    if not mixed and s.verifier is None:
        return problems
    change: dict[str, Any] = {"source": s.label} if mixed else {}
    if s.verifier is not None:
        change["verifier"] = s.verifier
    items: list[Problem] = [dataclasses.replace(p, **change) for p in problems]
    return Problems(items, problems.skipped, problems.errors)
