"""Plain values across the sandbox boundary: ``enc`` (a value -> JSON-able data) and ``dec``.

Both sides use this module: inside the sandbox its source is prepended to the harness (stdlib
only, nothing from the project), which encodes what the program returned; the parent decodes
and compares. ``dec`` builds nothing but builtin and standard-library values and inert ``Obj``
copies, so a comparison in the parent never runs program code, whatever the sandbox sent.

Encoded: ``None``, ``bool``, ``int`` (any size), ``float``, ``str``, ``bytes``, ``bytearray``,
``complex``, ``list``, ``tuple``, ``dict``, ``set``, ``frozenset``, ``range``, ``Fraction``,
``Decimal``, ``date``/``datetime``/``time``/``timedelta``, ``Counter``, ``OrderedDict``,
``defaultdict``, ``deque``, dict views, builtin types, nested in any way; generators and builtin
iterators (materialized, up to ``MAX_ITEMS`` items); namedtuples; and instances of classes the
program or the test defined, as ``Obj`` (class name + attributes, compared structurally: the
class's own ``__eq__`` is never called). Exact types only: a subclass of a builtin is not the
builtin. Anything else is ``{"$?": type name}``: as an argument it still keys a call; as a
result ``dec`` raises ``Unsupported`` with a message naming the type.
"""
import collections as _co
import itertools as _it
import json as _json
import sys as _sys

MAX_DEPTH = 300
MAX_ITEMS = 10000  # items taken from a returned generator or iterator
USER_MODULES = ("solution", "__test__", "__replay__")  # their classes' instances become Obj
_TYPES = {t.__name__: t for t in (int, float, str, bool, list, tuple, dict, set, frozenset, bytes, complex,
                                    bytearray, range, type(None))}
_DICTS = {"Counter": _co.Counter, "OrderedDict": _co.OrderedDict, "defaultdict": _co.defaultdict}
_DICT_NAMES = {v: k for k, v in _DICTS.items()}
_VIEWS = {type({}.keys()): "keys", type({}.values()): "values", type({}.items()): "items"}
_STDLIB = {("fractions", "Fraction"): "$fr", ("decimal", "Decimal"): "$dec", ("datetime", "datetime"): "$dt",
           ("datetime", "date"): "$dt", ("datetime", "time"): "$dt", ("datetime", "timedelta"): "$td"}


class Unsupported(ValueError):
    """A value the parent cannot rebuild (so cannot compare) without running program code."""


class Obj:
    """An inert copy of an instance of a program's or a test's class: its name and attributes.

    Equal to another ``Obj``, or to an instance of a class the (trusted) test defined in the
    parent, with the same class name and equal attributes. It has no methods.
    """

    __slots__ = ("_obj_cls", "_obj_attrs")

    def __init__(self, cls, attrs):
        object.__setattr__(self, "_obj_cls", str(cls))
        object.__setattr__(self, "_obj_attrs", dict(attrs))

    def __getattr__(self, name):
        try:
            return object.__getattribute__(self, "_obj_attrs")[name]
        except KeyError:
            raise AttributeError(f"{self._obj_cls!r} object has no attribute {name!r} (this is a copy of the "
                                 "program's object: its methods do not run outside the sandbox)") from None

    def __setattr__(self, name, value):
        self._obj_attrs[name] = value

    def __eq__(self, other):
        if type(other) is Obj:
            return self._obj_cls == other._obj_cls and self._obj_attrs == other._obj_attrs
        if getattr(type(other), "__module__", None) == "__replay__":  # the parent's own test classes
            return type(other).__name__ == self._obj_cls and self._obj_attrs == attrs_of(other)
        return NotImplemented

    def __hash__(self):
        return hash(self._obj_cls)

    def __repr__(self):
        return f"{self._obj_cls}({', '.join(f'{k}={v!r}' for k, v in self._obj_attrs.items())})"


def attrs_of(v):
    """An instance's attributes: its ``__dict__`` and ``__slots__`` (string names only)."""
    out = {k: x for k, x in getattr(v, "__dict__", {}).items() if type(k) is str}
    for klass in type(v).__mro__:
        slots = klass.__dict__.get("__slots__", ())
        for name in ([slots] if isinstance(slots, str) else slots):
            if type(name) is str and name not in ("__dict__", "__weakref__") and hasattr(v, name):
                out[name] = getattr(v, name)
    return out


def _stdlib_tag(t):
    tag = _STDLIB.get((getattr(t, "__module__", ""), getattr(t, "__qualname__", "")))
    mod = _sys.modules.get(t.__module__) if tag else None
    return tag if mod is not None and getattr(mod, t.__qualname__, None) is t else None


def _is_iterator(t):
    return t.__module__ in ("builtins", "itertools", "collections") and hasattr(t, "__next__") \
        and t.__name__ != "Obj"


class _Enc:
    def __init__(self, opaque, consume):
        self.opaque, self.consume, self.path = opaque, consume, set()

    def go(self, v, depth=0):
        if depth > MAX_DEPTH:
            raise ValueError("value nested too deeply")
        t = type(v)
        if t is bool or t is str or v is None or t is float:
            return v
        if t is int:
            return v if v.bit_length() < 14000 else {"$i": hex(v)}  # JSON ints stop at 4300 digits
        if t is bytes or t is bytearray:
            return {"$b" if t is bytes else "$ba": v.hex()}
        if t is complex:
            return {"$c": [v.real, v.imag]}
        if t is range:
            return {"$r": [v.start, v.stop, v.step]}
        if t is type and _TYPES.get(v.__name__) is v:
            return {"$ty": v.__name__}
        if id(v) in self.path:
            raise ValueError("value contains a cycle")
        self.path.add(id(v))
        try:
            return self.compound(v, t, depth + 1)
        finally:
            self.path.discard(id(v))

    def pairs(self, items, depth):
        return [[self.go(k, depth), self.go(x, depth)] for k, x in items]

    def compound(self, v, t, d):
        if t is list:
            return [self.go(x, d) for x in v]
        if t is tuple:
            return {"$t": [self.go(x, d) for x in v]}
        if t is dict:
            return {"$d": self.pairs(v.items(), d)}
        if t is set or t is frozenset:
            items = sorted((self.go(x, d) for x in v), key=lambda e: _json.dumps(e, sort_keys=True))
            return {"$s" if t is set else "$fs": items}
        if t in _DICT_NAMES:
            return {"$m": [_DICT_NAMES[t], self.pairs(v.items(), d)]}
        if t is _co.deque:
            return {"$q": [self.go(x, d) for x in v]}
        if t in _VIEWS:
            return {"$v": [_VIEWS[t], [self.go(x, d) for x in v]]}
        return self.other(v, t, d)

    def other(self, v, t, d):
        tag = _stdlib_tag(t)
        if tag == "$fr":
            return {tag: [self.go(v.numerator, d), self.go(v.denominator, d)]}
        if tag in ("$dec", "$dt"):
            return {tag: [t.__name__, str(v) if tag == "$dec" else v.isoformat()]}
        if tag == "$td":
            return {tag: [v.days, v.seconds, v.microseconds]}
        if t is Obj:
            return {"$o": [v._obj_cls, sorted([k, self.go(x, d)] for k, x in v._obj_attrs.items())]}
        if getattr(t, "__module__", None) in USER_MODULES:
            if issubclass(t, tuple) and hasattr(t, "_fields"):
                return {"$nt": [t.__name__, list(t._fields), [self.go(x, d) for x in v]]}
            if not issubclass(t, (int, float, str, bytes, tuple, list, dict, set, frozenset)):
                return {"$o": [t.__name__, sorted([k, self.go(x, d)] for k, x in attrs_of(v).items())]}
        if self.consume and (t.__name__ == "generator" or _is_iterator(t)):
            items = list(_it.islice(v, MAX_ITEMS + 1))
            return {"$g": [[self.go(x, d) for x in items[:MAX_ITEMS]], len(items) <= MAX_ITEMS]}
        if self.opaque:
            return {"$?": t.__name__}
        raise Unsupported(f"unsupported value of type {t.__name__}")


def enc(v, opaque=False, consume=True):
    """A value -> JSON-able data. ``opaque``: unsupported parts become ``{"$?": type}`` instead
    of raising; ``consume``: generators and iterators are materialized (else unsupported)."""
    return _Enc(opaque, consume).go(v)


def key(args, kwargs):
    """Canonical string for a call's arguments (matches a recorded call to its replay).
    Iterators are not consumed: they key as their type, and calls are then matched in order."""
    return _json.dumps([enc(list(args), True, False), sorted((k, enc(v, True, False)) for k, v in kwargs.items())],
                       sort_keys=True)


def _gen(items, complete):
    yield from items
    if not complete:
        raise Unsupported(f"a recorded generator was cut at {MAX_ITEMS} items")


def _stdlib(tag, v):
    if tag == "$fr":
        from fractions import Fraction
        if type(v[0]) is not int or type(v[1]) is not int:
            raise ValueError("bad Fraction")
        return Fraction(v[0], v[1])
    if tag == "$dec":
        from decimal import Decimal
        return Decimal(str(v[1]))
    import datetime
    if tag == "$td":
        return datetime.timedelta(*(int(x) for x in v))
    cls = {"date": datetime.date, "datetime": datetime.datetime, "time": datetime.time}[v[0]]
    return cls.fromisoformat(str(v[1]))


def _named(name, fields, items):
    return _co.namedtuple(str(name), [str(f) for f in fields], rename=True)(*items)


_DEC = {
    "$t": lambda v, d: tuple(d(i) for i in v),
    "$d": lambda v, d: {d(k): d(i) for k, i in v},
    "$s": lambda v, d: {d(i) for i in v},
    "$fs": lambda v, d: frozenset(d(i) for i in v),
    "$b": lambda v, d: bytes.fromhex(v),
    "$ba": lambda v, d: bytearray.fromhex(v),
    "$c": lambda v, d: complex(float(v[0]), float(v[1])),
    "$i": lambda v, d: int(v, 16),
    "$r": lambda v, d: range(int(v[0]), int(v[1]), int(v[2])),
    "$q": lambda v, d: _co.deque(d(i) for i in v),
    "$ty": lambda v, d: _TYPES[v],
    "$o": lambda v, d: Obj(v[0], {str(k): d(i) for k, i in v[1]}),
    "$nt": lambda v, d: _named(v[0], v[1], [d(i) for i in v[2]]),
    "$g": lambda v, d: _gen([d(i) for i in v[0]], bool(v[1])),
}


def _mapping(v, d):
    cls = _DICTS[v[0]]
    out = cls() if cls is not _co.defaultdict else _co.defaultdict(None)
    out.update({d(k): d(i) for k, i in v[1]})
    return out


def _view(v, d):
    items = [d(i) for i in v[1]]
    if v[0] == "keys":
        return dict.fromkeys(items).keys()
    return dict(enumerate(items)).values() if v[0] == "values" else dict(items).items()


def _opaque(v, d):
    raise Unsupported(f"a value of type {str(v)[:60]}, which cannot be compared outside the sandbox")


_DEC.update({"$m": _mapping, "$v": _view, "$?": _opaque})


def dec(x):
    """JSON-able data -> the value (only builtin / stdlib values and ``Obj``). Raises on
    malformed data (it came from the sandbox) and ``Unsupported`` for ``{"$?": ...}``."""
    if type(x) is list:
        return [dec(i) for i in x]
    if type(x) is not dict:
        return x
    (tag, v), = x.items()
    fn = _DEC.get(tag)
    if fn is not None:
        return fn(v, dec)
    if tag in ("$fr", "$dec", "$dt", "$td"):
        return _stdlib(tag, v)
    raise ValueError(f"unknown tag {tag!r}")
