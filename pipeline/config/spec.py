"""Settings declared once: a field of a frozen dataclass, with `setting(...)`, is a TOML key.

The field's annotation is the key's type, its default the default, and its `Setting` holds the
check and the documentation. From that one declaration follow, for any root dataclass:

- `parse`: a parsed TOML mapping -> the frozen dataclasses, every problem at once, one line each
  (`file: key: expected X, found Y`; `file: key: unknown key (did you mean K?)`);
- in `render.py`, `reference_markdown`: the reference tables (key, default, meaning) for the
  docs; `template`: a commented TOML file listing every key (set ones, and the rest with their
  default); `json_schema`: a JSON Schema (draft 4, what Taplo / Even Better TOML read) for editors.

A field that is neither a setting, a table (a dataclass) nor marked `internal()` is refused when
the declaration is read, so a key cannot be added in a way that skips any of these. This module
knows nothing of release.toml: `pipeline.config` declares its keys.

A `Path | str` field is a location: a value starting with one of its `remote` prefixes
(`https://`, `s3://`...) stays a string, checked by the setting's `check`; any other value is a
path, resolved (and `must_exist` applied) as a `Path` field's.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import re
import types
from collections.abc import Callable, Iterator
from dataclasses import MISSING, dataclass, is_dataclass
from functools import cache
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

_META = "fastai_release.setting"
_INTERNAL = "fastai_release.internal"


# --- checks: one call says what was expected (None: fine), `schema` says it to editors ------


class Check:
    """A value check: `check(v)` is None when `v` is fine, else what was expected."""

    def __call__(self, v: Any) -> str | None:
        raise NotImplementedError

    @property
    def schema(self) -> dict[str, Any]:
        """What a JSON Schema can say of the check (draft 4 keywords)."""
        return {}


@dataclass(frozen=True)
class Range(Check):
    lo: float | None = None
    hi: float | None = None

    def __call__(self, v: Any) -> str | None:
        lo, hi = self.lo, self.hi
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            bounds = (
                f">= {lo}" if hi is None else f"<= {hi}" if lo is None else f"between {lo} and {hi}"
            )
            return f"a number {bounds}"
        return None

    @property
    def schema(self) -> dict[str, Any]:
        out = {"minimum": self.lo, "maximum": self.hi}
        return {k: v for k, v in out.items() if v is not None}


@dataclass(frozen=True)
class OneOf(Check):
    options: tuple[Any, ...]

    def __call__(self, v: Any) -> str | None:
        return None if v in self.options else f"one of {', '.join(map(str, self.options))}"

    @property
    def schema(self) -> dict[str, Any]:
        return {"enum": list(self.options)}


@dataclass(frozen=True)
class SubsetOf(Check):
    """A list of distinct values among `options`."""

    options: tuple[str, ...]

    def __call__(self, v: Any) -> str | None:
        bad = [x for x in v if x not in self.options]
        return f"a list of {', '.join(self.options)}" if bad or len(set(v)) != len(v) else None

    @property
    def schema(self) -> dict[str, Any]:
        return {"items": {"type": "string", "enum": list(self.options)}, "uniqueItems": True}


@dataclass(frozen=True)
class Matches(Check):
    """A string the whole of which `rx` matches (`extra` may refuse more than the pattern)."""

    rx: re.Pattern[str]
    what: str
    extra: Callable[[str], bool] | None = None

    def __call__(self, v: Any) -> str | None:
        ok = self.rx.fullmatch(v) and (self.extra is None or self.extra(v))
        return None if ok else self.what

    @property
    def schema(self) -> dict[str, Any]:
        return {"pattern": self.rx.pattern}


@dataclass(frozen=True)
class Custom(Check):
    """A check written as a function; `json` is what a JSON Schema can say of it."""

    fn: Callable[[Any], str | None]
    json: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __call__(self, v: Any) -> str | None:
        return self.fn(v)

    @property
    def schema(self) -> dict[str, Any]:
        return self.json


# --- the declaration ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Setting:
    """What a field needs besides its type and default to be a documented, checked key."""

    doc: str  # one line: the starter's comment; the reference's meaning begins with it
    more: str = ""  # the rest of the reference's meaning
    check: Check | None = None
    expect: str | None = None  # what "expected" says instead of the type's or check's words
    default_doc: str | None = None  # the reference's default cell, when the value alone misleads
    example: Any = None  # the starter's value for a key that is unset by default
    must_exist: str | None = None  # a path: "CSV file" -> "expected an existing CSV file"
    # a location (`Path | str`): a value starting with one of these is remote, kept as the
    # string and checked by `check`; any other value is a path (`must_exist` applies)
    remote: tuple[str, ...] = ()


def setting(default: Any = MISSING, **kwargs: Any) -> Any:
    """A dataclass field that is a key of the file (no default: the key is required)."""
    return dataclasses.field(default=default, metadata={_META: Setting(**kwargs)})


def setting_of(cls: type, name: str) -> Setting:
    """The `Setting` of field `name` of `cls`."""
    return next(f for f in dataclasses.fields(cls) if f.name == name).metadata[_META]


def internal(default: Any = MISSING) -> Any:
    """A dataclass field that is not a key of the file (the loader fills it in)."""
    return dataclasses.field(default=default, metadata={_INTERNAL: True})


_TYPE_NAMES = {
    "str": "a string",
    "int": "an integer",
    "float": "a number",
    "bool": "true or false",
    "path": "a path string",
    "location": "a path or location string",
    "str_list": "a list of strings",
}


@dataclass(frozen=True)
class Key:
    """One declared key, as `parse` and the renderers see it."""

    name: str  # the field's name: "epochs"
    path: str  # dotted: "train.epochs"
    kind: str  # str int float bool path location str_list literal_bool table
    optional: bool  # `X | None`: unset is allowed
    required: bool  # no default
    default: Any
    setting: Setting | None  # None for a table
    table: type | None  # the dataclass of a table
    literals: tuple[Any, ...] = ()  # `Literal["auto"] | bool`: the allowed strings

    @property
    def expected(self) -> str:
        """What a wrong type is told it should have been."""
        if self.setting and self.setting.expect:
            return self.setting.expect
        if self.kind == "literal_bool":
            return ", ".join(json.dumps(x) for x in self.literals) + ", true or false"
        return "a table" if self.kind == "table" else _TYPE_NAMES[self.kind]

    def type_ok(self, v: Any) -> bool:
        k = self.kind
        if k in ("str", "path", "location"):
            return isinstance(v, str)
        if k == "int":
            return isinstance(v, int) and not isinstance(v, bool)
        if k == "float":
            return isinstance(v, int | float) and not isinstance(v, bool)
        if k == "bool":
            return isinstance(v, bool)
        if k == "literal_bool":
            return isinstance(v, bool) or v in self.literals
        if k == "str_list":
            return isinstance(v, list) and all(isinstance(x, str) for x in v)
        return isinstance(v, dict)


def _kind(tp: Any, where: str) -> tuple[str, bool, tuple[Any, ...]]:
    """(kind, optional, literals) of an annotation."""
    optional, literals = False, ()
    if get_origin(tp) in (Union, types.UnionType):
        members = [a for a in get_args(tp) if a is not type(None)]
        optional = len(members) < len(get_args(tp))
        lits = [a for a in members if get_origin(a) is Literal]
        if lits and len(lits) == 1 and set(members) - set(lits) == {bool}:
            return "literal_bool", optional, get_args(lits[0])
        if set(members) == {Path, str}:  # a local path or a remote location (Setting.remote)
            return "location", optional, literals
        if len(members) != 1:
            raise TypeError(f"{where}: {tp} is not a type a TOML key can have")
        tp = members[0]
    simple = {bool: "bool", int: "int", float: "float", str: "str", Path: "path"}
    if tp in simple:
        return simple[tp], optional, literals
    if get_origin(tp) is tuple and get_args(tp) == (str, ...):
        return "str_list", optional, literals
    if isinstance(tp, type) and is_dataclass(tp):
        return "table", optional, literals
    raise TypeError(f"{where}: {tp} is not a type a TOML key can have")


@cache
def keys(cls: type, prefix: str = "") -> tuple[Key, ...]:
    """The keys of one table (settings and sub-tables), in declaration order.

    Raises:
        TypeError: a field that is no setting, no table and not `internal()`, or has a type
            TOML cannot hold (the declaration is wrong: `pipeline.config` reads it at import).
    """
    hints = get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        if f.metadata.get(_INTERNAL):
            continue
        path = f"{prefix}{f.name}"
        kind, optional, literals = _kind(hints[f.name], f"{cls.__name__}.{f.name}")
        s = f.metadata.get(_META)
        if s is None and kind != "table":
            raise TypeError(
                f"{cls.__name__}.{f.name}: declare it with setting(default, doc=...) "
                "(or internal() when it is not a key of the file)"
            )
        if kind == "location" and (s is None or not s.remote or s.check is None):
            raise TypeError(
                f"{cls.__name__}.{f.name}: a `Path | str` setting needs `remote` (the prefixes "
                "of its remote forms) and a `check` of those forms"
            )
        default = f.default if f.default is not MISSING else None
        required = f.default is MISSING and f.default_factory is MISSING
        table = hints[f.name] if kind == "table" else None
        out.append(Key(f.name, path, kind, optional, required, default, s, table, literals))
    return tuple(out)


def walk(cls: type, prefix: str = "") -> Iterator[Key]:
    """Every setting under `cls`, tables depth-first, in declaration order."""
    for k in keys(cls, prefix):
        if k.table is not None:
            yield from walk(k.table, k.path + ".")
        else:
            yield k


def tables(cls: type, prefix: str = "") -> Iterator[tuple[str, type, list[Key]]]:
    """(dotted name, class, its settings) of `cls` ("" for the root) and every table under it."""
    own = [k for k in keys(cls, prefix) if k.table is None]
    yield prefix.rstrip("."), cls, own
    for k in keys(cls, prefix):
        if k.table is not None:
            yield from tables(k.table, k.path + ".")


# --- parse ------------------------------------------------------------------------------------


def describe(v: Any) -> str:
    """A found value for a message: its type and a short repr."""
    return "a table" if isinstance(v, dict) else f"{type(v).__name__} {repr(v)[:60]}"


@dataclass
class Parse:
    """The problems found so far, one line each, and the keys they are about."""

    where: str  # the file's name, the first word of every line
    resolve: Callable[[str], Path]  # a path string from the file -> a Path
    problems: list[str] = dataclasses.field(default_factory=list)
    bad: set[str] = dataclasses.field(default_factory=set)

    def problem(self, key: str, expected: str, found: str, *, bad: bool = True) -> None:
        """Add a problem line; `bad`: the key's value is wrong (checks reading it are skipped)."""
        self.problems.append(f"{self.where}: {key}: expected {expected}, found {found}")
        if bad:
            self.bad.add(key)

    def unknown(self, key: str, options: list[str], prefix: str) -> None:
        hint = difflib.get_close_matches(key.rsplit(".", 1)[-1], options, n=1)
        self.problems.append(
            f"{self.where}: {key}: unknown key"
            + (f" (did you mean {prefix}{hint[0]}?)" if hint else "")
        )


def parse(cls: type, raw: dict[str, Any], p: Parse, prefix: str = "", **fixed: Any) -> Any:
    """`raw` (a TOML table) as `cls`, every problem added to `p`. A wrong or missing value is
    replaced by its default, so that every other key is still checked; a missing table is an
    empty one (its required keys say so). `fixed`: the internal fields."""
    declared = keys(cls, prefix)
    names = [k.name for k in declared]
    for name in raw:
        if name not in names:
            p.unknown(f"{prefix}{name}", names, prefix)
    values = dict(fixed)
    for k in declared:
        v = raw.get(k.name, MISSING)
        if k.table is not None:
            sub = p
            if v is not MISSING and not isinstance(v, dict):
                p.problem(k.path, k.expected, describe(v))
                sub = Parse(p.where, p.resolve)  # its keys' defaults, without more problems
            values[k.name] = parse(k.table, v if isinstance(v, dict) else {}, sub, k.path + ".")
        elif v is MISSING:
            if k.required:
                p.problem(k.path, k.expected, "nothing (the key is required)")
            values[k.name] = _default(k, p)
        elif not k.type_ok(v):
            p.problem(k.path, k.expected, describe(v))
            values[k.name] = _default(k, p)
        else:
            values[k.name] = _value(k, v, p)
    return cls(**values)


def _default(k: Key, p: Parse) -> Any:
    """A key's default; a path resolved as if the file had it."""
    if k.kind == "path" and k.default is not None:
        return p.resolve(Path(k.default).as_posix())
    return k.default


def _value(k: Key, v: Any, p: Parse) -> Any:
    """A checked value of the type the dataclass holds (float, tuple, resolved Path)."""
    s = k.setting
    assert s is not None
    if k.kind == "float":
        v = float(v)
    remote = k.kind == "location" and v.startswith(s.remote)
    if s.check and (k.kind != "location" or remote) and (expected := s.check(v)):
        p.problem(k.path, s.expect or expected, describe(_public(v) if remote else v))
    if k.kind == "str_list":
        return tuple(v)
    if remote:
        return v
    if k.kind == "location" and "://" in v:  # a URL of a scheme no remote form has
        where = ", ".join(s.remote)
        p.problem(k.path, f"a path or a location starting with {where}", describe(_public(v)))
        return None
    if k.kind not in ("path", "location"):
        return v
    if v == "" and k.optional:
        return None
    path = p.resolve(v)
    if s.must_exist and not path.is_file():
        p.problem(k.path, f"an existing {s.must_exist}", f"no file at {path}")
    return path


def _public(location: str) -> str:
    """A location as a message may show it: without user info or a query (either may hold a
    secret; both are cut, not checked)."""
    scheme, sep, rest = location.partition("://")
    if not sep:
        return location.split("?", 1)[0]
    netloc, slash, path = rest.partition("/")
    netloc = netloc.rsplit("@", 1)[-1]
    return f"{scheme}://{netloc}{slash}{path}".split("?", 1)[0].split("#", 1)[0]
