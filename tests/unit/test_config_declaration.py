"""One declaration of release.toml: a key declared once (a dataclass field with `setting`)
reaches the defaults, the loader's checks, the reference, the starter and the JSON Schema;
a key declared any other way is refused, and an unknown key is an error, never dropped."""

from __future__ import annotations

import csv
import json
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from click.testing import CliRunner

from pipeline import config
from pipeline.cli import cli
from pipeline.config import render, spec
from pipeline.config.spec import Range, setting
from pipeline.errors import ConfigError
from pipeline.starter import init_config

ROOT = Path(__file__).resolve().parents[2]
MINIMAL = {
    "schema_version": 1,
    "model": {"name": "m", "version": "1.0.0"},
    "data": {"train_csv": "bundled:train.csv", "eval_csv": "bundled:eval.csv"},
}


@dataclass(frozen=True)
class _Train(config.TrainConfig):
    stop_after: float | None = setting(
        None, doc="stop training after this many seconds", example=600.0, check=Range(1)
    )


@dataclass(frozen=True, kw_only=True)
class _Release(config.ReleaseConfig):
    train: _Train = _Train()


def _load(raw: dict[str, Any], tmp_path: Path, root: type = config.ReleaseConfig) -> Any:
    return config.from_dict(raw, tmp_path / "release.toml", root)


def _with_train(**train: Any) -> dict[str, Any]:
    return {**MINIMAL, "train": train}


def test_a_key_declared_once_reaches_every_output(tmp_path: Path) -> None:
    # defaults and types
    assert _load(MINIMAL, tmp_path, _Release).train.stop_after is None
    assert _load(_with_train(stop_after=900), tmp_path, _Release).train.stop_after == 900.0
    # the loader's checks, with today's wording, all at once
    with pytest.raises(ConfigError) as e:
        _load(_with_train(stop_after=0, stop_aftr=5, epochs="x"), tmp_path, _Release)
    assert e.value.problems == [
        "release.toml: train.stop_aftr: unknown key (did you mean train.stop_after?)",
        "release.toml: train.epochs: expected an integer, found str 'x'",
        "release.toml: train.stop_after: expected a number >= 1, found float 0.0",
    ]
    # the reference, the starter, the JSON Schema
    row = "| `train.stop_after` | unset | stop training after this many seconds |"
    assert row in render.reference_markdown(_Release).splitlines()
    lines = render.template(_Release, {"model.name": "m"})
    train = lines[lines.index("[train]") : lines.index("[quantize]")]
    assert any(
        re.match(r"# stop_after = 600\.0 +# stop training .*; unset by default$", x) for x in train
    )
    props = render.json_schema(_Release, "t")["properties"]["train"]["properties"]
    assert props["stop_after"] == {
        "description": "stop training after this many seconds",
        "type": "number",
        "minimum": 1,
    }
    # ...and only there: the real declaration does not have it
    with pytest.raises(ConfigError, match=r"train.stop_after: unknown key"):
        _load(_with_train(stop_after=900), tmp_path)
    assert "stop_after" not in config.reference_markdown()


def test_a_field_declared_without_setting_is_refused() -> None:
    @dataclass(frozen=True)
    class Sloppy(config.TrainConfig):
        forgotten: int = 3  # a plain field: would skip docs, schema, starter

    with pytest.raises(TypeError, match=r"Sloppy.forgotten: declare it with setting\("):
        spec.keys(Sloppy)

    @dataclass(frozen=True)
    class Untyped(config.TrainConfig):
        weights: dict[str, int] = setting(field(default_factory=dict), doc="x")

    with pytest.raises(TypeError, match="Untyped.weights: .* is not a type a TOML key can have"):
        spec.keys(Untyped)


def _schema_leaves(node: dict[str, Any], prefix: str = "") -> set[str]:
    out = set()
    for name, sub in node["properties"].items():
        out |= _schema_leaves(sub, f"{prefix}{name}.") if "properties" in sub else {prefix + name}
    return out


def _starter(tmp_path: Path) -> str:
    data = tmp_path / "tickets.csv"
    with data.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["question", "topic"])
        w.writerows([f"question {i} about {t}", t] for t in ("a", "b") for i in range(10))
    init_config(tmp_path / "release.toml", csv_path=data)
    return (tmp_path / "release.toml").read_text()


def test_every_declared_key_is_in_every_output(tmp_path: Path) -> None:
    declared = [k.path for k in spec.walk(config.ReleaseConfig)]
    assert len(declared) == len(set(declared)) > 60
    reference = config.reference_markdown()
    rows = re.findall(r"^\| `([a-z0-9_.]+)` \|", reference, re.M)
    assert rows == declared
    assert _schema_leaves(config.json_schema()) == set(declared)
    table, in_starter = "", []
    for line in _starter(tmp_path).splitlines():
        if m := re.fullmatch(r"\[([a-z0-9_.]+)\]", line):
            table = m[1] + "."
        elif m := re.match(r"(?:# )?([a-z0-9_]+) = ", line):
            in_starter.append(table + m[1])
    assert in_starter == declared


def test_the_starter_comments_out_the_real_defaults(tmp_path: Path) -> None:
    text = _starter(tmp_path)
    as_written = config.load(tmp_path / "release.toml")
    keys = {k.name for k in spec.walk(config.ReleaseConfig) if k.default is not None}
    uncommented = "\n".join(
        line[2:] if (m := re.match(r"# ([a-z0-9_]+) = ", line)) and m[1] in keys else line
        for line in text.splitlines()
    )
    assert uncommented != text
    (tmp_path / "every.toml").write_text(uncommented)
    assert config.load(tmp_path / "every.toml").train == as_written.train
    assert config.load(tmp_path / "every.toml") == config.ReleaseConfig(
        **{**as_written.__dict__, "path": (tmp_path / "every.toml").resolve()}
    )


def test_every_key_documented_for_the_starter_and_the_reference() -> None:
    for k in spec.walk(config.ReleaseConfig):
        s = k.setting
        assert s is not None and s.doc and "\n" not in s.doc and len(s.doc) <= 90, k.path
        assert not s.doc.endswith("."), k.path  # the reference adds ". " before `more`
        if k.default is None and not k.required:  # an unset key: the starter shows an example
            assert s.example is not None, k.path
            assert render.toml_value(s.example)
        if k.default is not None:  # the default as TOML reads back as the default
            value = tomllib.loads(f"x = {render.toml_value(k.default)}")["x"]
            default = k.default.as_posix() if isinstance(k.default, Path) else k.default
            assert value == (list(default) if isinstance(default, tuple) else default), k.path


def test_json_schema_accepts_the_demo_configs_and_refuses_what_the_loader_refuses() -> None:
    out = CliRunner().invoke(cli, ["schema"])
    assert out.exit_code == 0, out.output
    schema = json.loads(out.output)
    assert schema == config.json_schema()
    jsonschema.Draft4Validator.check_schema(schema)  # Taplo reads draft 4
    check = jsonschema.Draft4Validator(schema)
    for path in (ROOT / "release.toml", ROOT / "tests" / "fixtures" / "tiny.toml"):
        assert not list(check.iter_errors(tomllib.loads(path.read_text()))), path
    bad = {
        **MINIMAL,
        "train": {"epochs": 0, "epoch": 3, "tokenizer": "bpe"},
        "onnx": {"enabled": "yes"},
        "quantize": {"modules": ["lstm", "conv"]},
        "publish": {"github": {"repo": "no-slash"}},
    }
    found = {"/".join(map(str, e.absolute_path)) or e.message for e in check.iter_errors(bad)}
    assert found == {
        "train/epochs",
        "train",  # the unknown key `epoch`
        "train/tokenizer",
        "onnx/enabled",
        "quantize/modules/1",
        "publish/github/repo",
    }
