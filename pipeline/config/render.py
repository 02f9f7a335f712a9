"""What follows from the declaration (`spec`) besides parsing, for any root dataclass: the
reference tables for the docs (`reference_markdown`), a commented TOML file listing every key
(`template`, `release init`'s starter) and a JSON Schema for editors (`json_schema`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipeline.config.spec import Key, keys, tables, walk

SCHEMA_DRAFT = "http://json-schema.org/draft-04/schema#"  # Taplo reads draft 4


def toml_value(v: Any) -> str:
    """`v` as a TOML literal (a string, number, boolean, path or list of them)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, Path):
        return json.dumps(v.as_posix())
    if isinstance(v, str):
        return json.dumps(v)  # a TOML basic string: the same escapes
    if isinstance(v, tuple | list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    raise TypeError(f"{v!r}: no TOML literal")


def _json_default(v: Any) -> Any:
    return v.as_posix() if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v


def _doc(cls: type) -> str:
    return " ".join((cls.__doc__ or "").split())


def _meaning(k: Key) -> str:
    s = k.setting
    assert s is not None
    return f"{s.doc}. {s.more}" if s.more else s.doc


def default_cell(k: Key) -> str:
    """The reference table's default: the value as TOML, or "required" / "unset"."""
    s = k.setting
    if s and s.default_doc:
        return s.default_doc
    if k.required:
        return "required"
    return "unset" if k.default is None else f"`{toml_value(k.default)}`"


def reference_markdown(root: type, heading_level: int = 2) -> str:
    """One section per table (`## [train]`): its docstring, then key | default | meaning."""
    out: list[str] = []
    for name, cls, own in tables(root):
        if not own:
            continue
        out += [f"{'#' * heading_level} {f'[{name}]' if name else 'Top level'}", ""]
        if name and _doc(cls):
            out += [_doc(cls), ""]
        out += ["| key | default | meaning |", "|---|---|---|"]
        for k in own:
            cells = (f"`{k.path}`", default_cell(k), _meaning(k))
            out.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
        out.append("")
    return "\n".join(out)


def json_schema(root: type, title: str) -> dict[str, Any]:
    """A JSON Schema (draft 4) of the file: types, bounds, choices, defaults and docs."""
    return {"$schema": SCHEMA_DRAFT, "title": title, **_object_schema(root, "")}


def _object_schema(cls: type, prefix: str) -> dict[str, Any]:
    props: dict[str, Any] = {}
    for k in keys(cls, prefix):
        props[k.name] = _object_schema(k.table, k.path + ".") if k.table else _key_schema(k)
    out: dict[str, Any] = {"description": _doc(cls)} if _doc(cls) else {}
    out |= {"type": "object", "additionalProperties": False, "properties": props}
    required = [k.name for k in keys(cls, prefix) if k.required]
    if required:  # draft 4: an empty list is not allowed
        out["required"] = required
    return out


def _key_schema(k: Key) -> dict[str, Any]:
    assert k.setting is not None
    types_ = {"str": "string", "path": "string", "location": "string", "int": "integer"}
    types_ |= {"float": "number"}
    types_ |= {"bool": "boolean", "str_list": "array"}
    out: dict[str, Any] = {"description": _meaning(k)}
    if k.kind == "literal_bool":
        out["enum"] = [*k.literals, True, False]
    else:
        out["type"] = types_[k.kind]
    if k.kind == "str_list":
        out["items"] = {"type": "string"}
    if k.setting.check:
        out |= k.setting.check.schema
    if k.default is not None and not k.required:
        out["default"] = _json_default(k.default)
    return out


def template(
    root: type,
    values: dict[str, Any],
    notes: dict[str, str] | None = None,
    comments: dict[str, list[str]] | None = None,
    width: int = 34,
) -> list[str]:
    """A TOML file listing every key: `values` set (dotted key -> value), every other key
    commented out with its default (or its example when it has none) and its one-line doc.

    `notes` replaces a key's trailing comment; `comments` adds lines (without "# ") after a key's
    line or, for a table's name, after its header ("" is the top of the file).
    """
    notes, comments = notes or {}, comments or {}
    declared = {k.path for k in walk(root)}
    unknown = (set(values) | set(notes) | set(comments)) - declared - {n for n, *_ in tables(root)}
    if unknown:
        raise KeyError(f"not declared: {sorted(unknown)}")
    out: list[str] = []
    for name, _cls, own in tables(root):
        if name:
            out += ["", f"[{name}]"]
        out += [f"# {c}" for c in comments.get(name, [])]
        for k in own:
            s = k.setting
            assert s is not None
            if k.path in values:
                line = f"{k.name} = {toml_value(values[k.path])}"
            else:
                shown = s.example if k.default is None else k.default
                line = f"# {k.name} = {toml_value(shown) if shown is not None else ''}".rstrip()
            unset = k.default is None and not k.required and k.path not in values
            note = notes.get(k.path) or s.doc + ("; unset by default" if unset else "")
            out.append(f"{line:<{width}}  # {note}")
            out += [f"# {c}" for c in comments.get(k.path, [])]
    return out
