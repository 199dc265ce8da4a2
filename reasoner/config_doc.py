"""Each config key's documentation is the comment beside its field in ``reasoner/config.py`` (or the
comment lines just above it); ``comments()`` reads them from that source once, ``render(cfg)`` writes
a config as YAML with each key followed by its comment (``reasoner config show``), and YAML that
``reasoner train --config`` reads back."""
from __future__ import annotations

import functools
import inspect
import io
import re
import tokenize

import yaml

from reasoner import config


@functools.cache
def comments() -> dict[str, str]:
    """``{"run.steps": "...", ...}``: a multi-line comment keeps its line breaks; a key with none is absent."""
    source = inspect.getsource(config)
    notes = {tok.start[0]: tok.string.lstrip("#").strip()
             for tok in tokenize.generate_tokens(io.StringIO(source).readline) if tok.type == tokenize.COMMENT}
    lines = source.splitlines()
    out = {}
    for section, cls in config.SCHEMA.sections.items():
        body, first = inspect.getsourcelines(cls)
        for offset, line in enumerate(body):
            m = re.match(r"\s+(\w+)\s*:", line)
            if not m or m.group(1) not in config.SCHEMA.hints[section]:
                continue
            number, above = first + offset, []
            while lines[number - 2 - len(above)].lstrip().startswith("#"):
                above.insert(0, notes[number - 1 - len(above)])
            note = notes.get(number) or "\n".join(above)
            if note:
                out[f"{section}.{m.group(1)}"] = note
    return out


def section_doc(section: str) -> str:
    """The section dataclass's own docstring (dataclass writes a signature where there is none)."""
    doc = config.SCHEMA.sections[section].__dict__.get("__doc__") or ""
    return "" if doc.startswith(config.SCHEMA.sections[section].__name__ + "(") else " ".join(doc.split())


def render(cfg: config.Config) -> str:
    """The config as YAML, each key followed by its comment (a multi-line one above the key)."""
    notes, out = comments(), []
    for section, values in config.to_dict(cfg).items():
        doc = section_doc(section)
        out.append(f"{section}:" + (f"  # {doc}" if doc else ""))
        for name, value in values.items():
            note = notes.get(f"{section}.{name}", "")
            if "\n" in note:
                out += [f"  # {line}" for line in note.splitlines()]
            out.append(f"  {name}: {_flow(value)}" + (f"  # {note}" if note and "\n" not in note else ""))
    return "\n".join(out) + "\n"


def _flow(value) -> str:
    """One value as one line of flow YAML: ``tiny``, ``''``, ``null``, ``[a, b]``, ``{problem: question}``."""
    return yaml.safe_dump([value], default_flow_style=True, width=float("inf"), allow_unicode=True).strip()[1:-1]
