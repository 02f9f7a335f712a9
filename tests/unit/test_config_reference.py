"""The config reference table (docs/config.md) is held against the config schema: same keys,
same defaults, a meaning for each, so the documentation cannot drift from the code again."""

from __future__ import annotations

import json
import re

from pipeline.config import SPEC
from tests.conftest import ROOT


def _reference_rows() -> list[tuple[list[str], list[str], str]]:
    section = (ROOT / "docs" / "config.md").read_text()
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 3 or not cells[0].startswith("`"):
            continue
        keys = re.findall(r"`([a-z0-9_.]+)`", cells[0])
        rows.append((keys, cells[1], cells[2]))
    return rows


def _documented(keys: list[str], default: str) -> dict[str, str]:
    """key -> its documented default (a cell "30, 0.01" for two keys gives one each)."""
    if len(keys) == 1:
        return {keys[0]: default}
    parts = [p.strip() for p in re.split(r",\s+(?![^\[]*\])", default)]
    if len(parts) == 1:  # one default for all of them ("unset")
        parts *= len(keys)
    assert len(parts) == len(keys), (keys, default)
    return dict(zip(keys, parts, strict=True))


def _parse(cell: str) -> object:
    cell = cell.strip()
    if cell.startswith(("required", "unset")):
        return cell.split()[0]
    cell = cell.strip("`")
    try:
        return json.loads(cell)
    except json.JSONDecodeError:
        return cell  # a bare string default: `text`, `auto`, `artifacts/build`


def test_every_key_is_documented_once_with_its_default_and_a_meaning() -> None:
    documented: dict[str, str] = {}
    for keys, default, meaning in _reference_rows():
        assert meaning, f"{keys}: no meaning in docs/config.md"
        for k, d in _documented(keys, default).items():
            assert k not in documented, f"{k} documented twice"
            documented[k] = d
    schema = {f"{section}.{k}": f for section, fields in SPEC.items() for k, f in fields.items()}
    assert set(documented) - {"schema_version"} == set(schema), (
        f"only in docs/config.md: {sorted(set(documented) - set(schema) - {'schema_version'})}; "
        f"only in the code: {sorted(set(schema) - set(documented))}"
    )
    for key, f in schema.items():
        doc = _parse(documented[key])
        if f.required:
            assert doc == "required", (
                f"{key}: docs/config.md says {documented[key]!r}, the code requires it"
            )
        elif f.default is None:
            assert doc in ("unset", "required"), (
                f"{key}: docs/config.md says {documented[key]!r}, the code has no default"
            )
        else:
            assert doc == f.default, (
                f"{key}: docs/config.md says {documented[key]!r}, the code's default is {f.default!r}"
            )


def test_the_reference_table_is_found() -> None:
    assert len(_reference_rows()) > 30
