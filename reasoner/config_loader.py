"""Layered loading of a dataclass tree ``{section: dataclass}`` with OmegaConf's structured configs.

A layer is one source of values (a YAML file, ``key.sub=value`` overrides, a dict of dotted keys),
checked against the schema as it is read: an unknown key gets the closest valid keys ("did you mean"),
and the command-line forms OmegaConf has no type for become its form (``a,b`` for a list, ``none``
for an optional value). ``Schema.build`` puts the layers over the defaults; OmegaConf converts and
checks every value's type, and a mismatch names the full key. ``reasoner.config`` holds the schema.
"""
from __future__ import annotations

import difflib
import re
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException, ValidationError

from reasoner.errors import ConfigError

Layer = dict[str, dict[str, Any]]  # {section: {key: value}}: every key known, the values in OmegaConf's form


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A config file's sections; a missing file or a YAML syntax error is a ConfigError naming the file."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        tree = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{p}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(p)
        what = " ".join(str(getattr(e, "problem", None) or e).split())
        raise ConfigError(f"{where}: invalid YAML ({what})") from None
    if tree is not None and not isinstance(tree, dict):
        raise ConfigError(f"{p}: expected sections (model:, data:, run:, ...), got a {type(tree).__name__}")
    return tree or {}


def _value(key: str, hint: Any, value: Any) -> Any:
    """A YAML value or a command-line string as OmegaConf takes it; a list of strings holds strings only
    (OmegaConf would turn ``[1, 2]`` into ``["1", "2"]``)."""
    value = _text(key, hint, value) if isinstance(value, str) else value
    if hint == list[str]:
        value = [] if value is None else value
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{key}: expected a list of strings, got {value!r}")
    return value


def _text(key: str, hint: Any, value: str) -> Any:
    """A string field's text as given, ``a,b`` for a list, ``none`` for an optional value, anything else
    parsed as YAML (``{length: 1.0}``, ``[0.9, 0.95]``, ``3e-4``)."""
    if value.lower() in ("none", "null") and type(None) in typing.get_args(hint):
        return None
    if hint in (str, str | None) or (hint is Any and not value.lstrip().startswith(("[", "{"))):
        return value
    if typing.get_origin(hint) is list and not value.lstrip().startswith("["):
        return [v for v in value.split(",") if v]
    try:
        return yaml.safe_load(value)
    except yaml.YAMLError as e:
        raise ConfigError(f"{key}: cannot parse {value!r} ({getattr(e, 'problem', None) or e})") from None


def combine(layers: list[Layer]) -> Layer:
    """Later layers win key by key; a dict or list value is replaced whole, not merged."""
    out: Layer = {}
    for layer in layers:
        for section, values in layer.items():
            out.setdefault(section, {}).update(values)
    return out


class Schema:
    """The root dataclass (each field a section dataclass) and the keys that were renamed (old key -> the fix)."""

    def __init__(self, root: type, renamed: Mapping[str, str]):
        self.root, self.renamed = root, renamed
        self.sections: dict[str, type] = typing.get_type_hints(root)
        self.hints = {s: typing.get_type_hints(cls) for s, cls in self.sections.items()}
        self._defaults = None  # OmegaConf.structured(root), built once (merge copies it)

    def file(self, path: str | Path) -> Layer:
        return self.layer(read_yaml(path), f"{path}: ")

    def overrides(self, items: list[str]) -> Layer:
        """``key.sub=value`` strings (the command line)."""
        for item in items:
            if "=" not in item:
                raise ConfigError(f"override {item!r} must look like key.sub=value")
        return self.dotted(dict(item.partition("=")[::2] for item in items), "")

    def dotted(self, values: Mapping[str, Any], where: str) -> Layer:
        """``{"eval.n": 4}``: a preset, command-line flags, a script's defaults."""
        tree: dict[str, dict[str, Any]] = {}
        for key, value in values.items():
            section, dot, name = key.strip().partition(".")
            if not dot or not name:
                raise self._unknown(key.strip(), where)
            tree.setdefault(section, {})[name] = value
        return self.layer(tree, where)

    def layer(self, tree: Mapping[str, Any], where: str) -> Layer:
        """A ``{section: {key: value}}`` tree checked key by key; ``where`` prefixes its errors (the file)."""
        out: Layer = {}
        for section, values in tree.items():
            if section not in self.sections or not isinstance(values, Mapping):
                first = next(iter(values), "") if isinstance(values, Mapping) else ""
                raise self._unknown(f"{section}.{first}".rstrip("."), where)
            for name, value in values.items():
                key = f"{section}.{name}"
                if key in self.renamed:
                    raise ConfigError(f"{where}{key} was replaced by {self.renamed[key]}")
                if name not in self.hints[section]:
                    raise self._unknown(key, where)
                out.setdefault(section, {})[name] = _value(key, self.hints[section][name], value)
        return out

    def _unknown(self, key: str, where: str) -> ConfigError:
        section, _, name = key.partition(".")
        near = self._near(section, name or section)  # a bare `steps=3`: the sections that have a key `steps`
        hint = f"; did you mean {' or '.join(near)}?" if near else ""
        valid = (f"valid keys in {section}: {', '.join(self.hints[section])}" if section in self.sections
                 else f"sections: {', '.join(self.sections)}")
        return ConfigError(f"{where}unknown config key {key!r}{hint} ({valid})")

    def _near(self, section: str, name: str) -> list[str]:
        """The closest valid keys: close names in the (closest) section, else the same name in another one."""
        sections = [section] if section in self.sections else difflib.get_close_matches(section, self.sections, n=1)
        near = [f"{s}.{k}" for s in sections for k in difflib.get_close_matches(name, self.hints[s], n=2, cutoff=0.7)]
        return near or [f"{s}.{name}" for s in self.sections if name in self.hints[s]]

    def build(self, layers: list[Layer]) -> Any:
        """The layers over the defaults, as the root dataclass; a value of the wrong type names its key."""
        if self._defaults is None:
            self._defaults = OmegaConf.structured(self.root)
        try:
            return OmegaConf.to_object(OmegaConf.merge(self._defaults, combine(layers)))
        except ValidationError as e:
            raise ConfigError(f"{e.full_key}: expected {self._type_name(e.full_key)}, got {e.value!r}") from None
        except OmegaConfBaseException as e:
            raise ConfigError(f"{e.full_key}: {e.msg}") from None

    def _type_name(self, full_key: str) -> str:
        """``int`` for run.steps, ``float`` for algo.reward_weights.length (a dict's values), ``str`` for
        sampling.stop[0] (a list's items)."""
        section, name, *inner = re.split(r"[.\[]", full_key)
        hint = self.hints[section][name]
        if inner:
            hint = typing.get_args(hint)[-1]
        return hint.__name__ if isinstance(hint, type) else str(hint).replace("typing.", "")


def plain(cfg: Any) -> dict[str, Any]:
    """A dataclass tree as plain YAML-safe data (tuples as lists: OmegaConf 2.4 keeps tuples)."""
    return _lists(OmegaConf.to_container(OmegaConf.structured(cfg)))


def _lists(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _lists(v) for k, v in x.items()}
    return [_lists(v) for v in x] if isinstance(x, (list, tuple)) else x
