"""release.toml: every setting declared once, as a field of a frozen dataclass (one per table).

A field's annotation is the key's type, its default the default, and `setting(...)` its check
and documentation. From that one declaration follow the loader's checks (`load`: every problem at
once, one line each), the config reference (`reference_markdown`), the starter `release init`
writes (`starter_toml`) and the JSON Schema editors read (`json_schema`, `release schema`). To add
a key, add a field to its table: nothing else lists keys. The tables: [model], [data], [build]
and the root here; [train] in `train.py`; [quantize], [onnx], [validate] in `variants.py`;
[publish] and its targets in `publish.py`; the machinery in `spec.py`, and what it renders in
`render.py`.

Why dataclass fields with metadata and not pydantic models: this package is imported by the base
install's CLI (`release fetch` and `release list` read [publish.local] root), where pydantic is
not a dependency; callers use `dataclasses.replace` and `asdict` on these objects (the build key
is `asdict(config)`); and pydantic's messages and lax coercions ("1" -> 1) would have to be
mapped back to ours ("expected a number between 1 and 10000, found int -3") type by type.

Paths in release.toml are relative to the file's own directory. A data path may also be
`bundled:NAME` to use a CSV shipped inside this package (the demo dataset).
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from pipeline.config import render, spec
from pipeline.config.publish import (
    PLACEHOLDER_OWNER,
    PUBLISH_TARGETS,
    GitHubTarget,
    HubTarget,
    LocalTarget,
    PublishConfig,
    S3Target,
    is_placeholder,
    placeholder_repo,
)
from pipeline.config.spec import Matches, OneOf, internal, setting
from pipeline.config.train import TrainConfig
from pipeline.config.variants import (
    QUANTIZABLE_MODULES,
    QUANTIZED_ENGINES,
    OnnxConfig,
    QuantizeConfig,
    ValidateConfig,
)
from pipeline.errors import ConfigError

__all__ = [
    "BUNDLED_PREFIX",
    "PLACEHOLDER_OWNER",
    "PUBLISH_TARGETS",
    "QUANTIZABLE_MODULES",
    "QUANTIZED_ENGINES",
    "SCHEMA_VERSION",
    "BuildConfig",
    "DataConfig",
    "GitHubTarget",
    "KEYS",
    "HubTarget",
    "LocalTarget",
    "ModelConfig",
    "OnnxConfig",
    "PublishConfig",
    "QuantizeConfig",
    "ReleaseConfig",
    "S3Target",
    "TrainConfig",
    "ValidateConfig",
    "from_dict",
    "is_placeholder",
    "json_schema",
    "load",
    "placeholder_repo",
    "reference_markdown",
    "resolve_path",
    "starter_toml",
]

SCHEMA_VERSION = 1
BUNDLED_PREFIX = "bundled:"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
_VERSION = re.compile(r"^\d+\.\d+\.\d+([.-]?[A-Za-z0-9.]+)?$")


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """What is released: the model's name and version."""

    name: str = setting(
        doc="the model's name: letters, digits, `.`, `_`, `-`",
        check=Matches(_NAME, "a name of letters, digits, '.', '_', '-'"),
    )
    version: str = setting(
        doc="`MAJOR.MINOR.PATCH[suffix]`; published versions are immutable",
        check=Matches(_VERSION, 'a version like "1.2.0"'),
    )
    description: str = setting("", doc="one line for the report and `release info`")


@dataclass(frozen=True, kw_only=True)
class DataConfig:
    """The labelled CSV files and their columns."""

    train_csv: Path | None = setting(
        None,
        doc="labelled training CSV",
        default_doc="required unless `train.export_pkl`",
        example="train.csv",
        must_exist="CSV file",
    )
    eval_csv: Path = setting(doc="labelled eval CSV (held out)", must_exist="CSV file")
    text_column: str = setting("text", doc="the CSV column of the texts")
    label_column: str = setting("label", doc="the CSV column of the labels")
    challenge_csv: Path | None = setting(
        None,
        doc="labelled CSV of queries phrased unlike the training data",
        more="No text may be shared with train or eval (case, spacing and punctuation aside: "
        "refused); texts sharing 70%+ of their words with a training text get a warning naming "
        "one, since they overstate accuracy on new phrasing (the eval CSV gets the same "
        "checks). Every variant and the baseline are scored on it",
        example="challenge.csv",
        must_exist="CSV file",
    )


@dataclass(frozen=True)
class BuildConfig:
    """Where builds are written."""

    dir: Path = setting(Path("artifacts/build"), doc="builds go to `<dir>/<version>/`")


@dataclass(frozen=True, kw_only=True)
class ReleaseConfig:
    """The whole of release.toml, checked."""

    path: Path = internal()
    schema_version: int = setting(
        doc=f"the file format's version: `{SCHEMA_VERSION}`",
        expect=f"the integer {SCHEMA_VERSION}",
        check=OneOf((SCHEMA_VERSION,)),
    )
    model: ModelConfig
    data: DataConfig
    train: TrainConfig = TrainConfig()
    quantize: QuantizeConfig = QuantizeConfig()
    onnx: OnnxConfig = OnnxConfig()
    validate: ValidateConfig = ValidateConfig()
    build: BuildConfig = BuildConfig()
    publish: PublishConfig = PublishConfig()

    @property
    def build_dir(self) -> Path:
        """Where `release build` writes this version: <build.dir>/<version>."""
        return self.build.dir / self.model.version


# Every key, read from the declaration now: a field declared without `setting` fails the import.
KEYS: tuple[spec.Key, ...] = tuple(spec.walk(ReleaseConfig))


# --- what no single key can check ---------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    """A check across keys: `found(config)` is what is wrong (None: nothing). It is skipped when
    a key it reads already has a problem of its own."""

    key: str  # the key the problem line names
    reads: tuple[str, ...]
    expected: str
    found: Callable[[ReleaseConfig], str | None]


def _subwords(c: ReleaseConfig) -> bool:
    return c.train.tokenizer == "subwords"


def _remote_learner(c: ReleaseConfig) -> bool:
    return isinstance(c.train.export_pkl, str)  # a location; a local file is a Path


def _pin_problem(c: ReleaseConfig, key: str) -> str | None:
    """What is wrong with `train.<key>` (the export_pkl pin) given export_pkl, or None."""
    value = getattr(c.train, key)
    if value is None and _remote_learner(c):
        return "nothing"
    if value is not None and c.train.export_pkl is None:
        return repr(value)
    return None


def _one_of_pair(c: ReleaseConfig) -> str | None:
    return (
        "only one"
        if (c.train.pretrained_weights is None) != (c.train.pretrained_vocab is None)
        else None
    )


RULES = (
    Rule(
        "data.train_csv",
        ("data.train_csv", "train.export_pkl"),
        "a CSV path (or train.export_pkl to load a trained learner)",
        lambda c: "nothing" if c.data.train_csv is None and c.train.export_pkl is None else None,
    ),
    # a download is checked before it is unpickled: by its size as it arrives, then its blake3
    Rule(
        "train.export_pkl_blake3",
        ("train.export_pkl", "train.export_pkl_blake3"),
        "the learner's blake3 with a remote train.export_pkl (`b3sum export.pkl` where it was "
        "trained), or unset without train.export_pkl",
        lambda c: _pin_problem(c, "export_pkl_blake3"),
    ),
    Rule(
        "train.export_pkl_size",
        ("train.export_pkl", "train.export_pkl_size"),
        "the learner's size in bytes with a remote train.export_pkl (`wc -c < export.pkl` where "
        "it was trained), or unset without train.export_pkl",
        lambda c: _pin_problem(c, "export_pkl_size"),
    ),
    # a loaded learner is released byte for byte; the aliases are added after training here
    Rule(
        "train.typo_aliases",
        ("train.typo_aliases", "train.export_pkl"),
        "false with train.export_pkl (they are added to learners trained here; for your own, "
        "call pipeline.typo_aliases.add_to_learner before learn.export)",
        lambda c: "true" if c.train.typo_aliases and c.train.export_pkl is not None else None,
    ),
    # a loaded learner keeps the tokenizer rules it was trained with
    Rule(
        "train.case_markers",
        ("train.case_markers", "train.export_pkl"),
        "true with train.export_pkl (the learner's rules stay)",
        lambda c: "false" if not c.train.case_markers and c.train.export_pkl is not None else None,
    ),
    Rule(
        "train.pretrained_weights/pretrained_vocab",
        ("train.pretrained_weights", "train.pretrained_vocab"),
        "both set or both unset",
        _one_of_pair,
    ),
    Rule(
        "train.pretrained",
        ("train.pretrained_weights", "train.pretrained_vocab", "train.pretrained"),
        "true when train.pretrained_weights and pretrained_vocab are set (or remove them)",
        lambda c: (
            "false"
            if c.train.pretrained_weights and c.train.pretrained_vocab and not c.train.pretrained
            else None
        ),
    ),
    Rule(
        "train.typo_aliases",
        ("train.tokenizer", "train.typo_aliases"),
        'false with train.tokenizer = "subwords" (aliases map misspelled words to words; '
        "a subword vocabulary has pieces)",
        lambda c: "true" if _subwords(c) and c.train.typo_aliases else None,
    ),
    # both would only be found after training: the weights' vocabulary is words, and the
    # onnx client reproduces fastai's spaCy tokenizer only
    Rule(
        "train.tokenizer",
        ("train.tokenizer", "train.pretrained"),
        '"words" with train.pretrained = true (AWD_LSTM weights come with a word vocabulary)',
        lambda c: '"subwords"' if _subwords(c) and c.train.pretrained else None,
    ),
    Rule(
        "train.tokenizer",
        ("train.tokenizer", "onnx.enabled"),
        '"words" with onnx.enabled = true (the onnx variant needs fastai\'s spaCy '
        'tokenizer; set onnx.enabled = "auto" to release a subword model without it)',
        lambda c: '"subwords"' if _subwords(c) and c.onnx.enabled is True else None,
    ),
    Rule(
        "data.label_column",
        ("data.text_column", "data.label_column"),
        "a column other than data.text_column",
        lambda c: repr(c.data.label_column) if c.data.text_column == c.data.label_column else None,
    ),
)


# --- loading ----------------------------------------------------------------------------------


def resolve_path(value: str, root: Path) -> Path:
    """A path from release.toml: `bundled:NAME`, absolute, or relative to the file's directory."""
    if value.startswith(BUNDLED_PREFIX):
        return Path(str(resources.files("pipeline.data").joinpath(value[len(BUNDLED_PREFIX) :])))
    p = Path(value).expanduser()
    return p if p.is_absolute() else (root / p)


def load(path: Path | str) -> ReleaseConfig:
    """Read and check release.toml.

    Raises:
        ConfigError: the file is missing, is not TOML (with line and column), or has any wrong,
            unknown or missing key or missing input file; all problems are listed, one per line.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found (pass --config or set RELEASE_CONFIG)")
    try:
        raw = tomllib.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text (byte {e.start})") from e
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from e
    return from_dict(raw, path)


def from_dict(
    raw: dict[str, Any], path: Path, root: type[ReleaseConfig] = ReleaseConfig
) -> ReleaseConfig:
    """Check a parsed release.toml mapping (see `load`); `root`: the declaration to check it by."""
    base = path.parent.resolve()
    p = spec.Parse(path.name, lambda v: resolve_path(v, base))
    c = spec.parse(root, raw, p, path=path.resolve())
    for rule in RULES:
        if not p.bad.intersection(rule.reads) and (found := rule.found(c)):
            p.problem(rule.key, rule.expected, found, bad=False)
    targets = () if "publish.targets" in p.bad else c.publish.targets
    for target in (c.publish.remote(t) for t in targets if t != "local"):
        table = f"publish.{target.name}"
        problem = target.missing(f"publish.targets includes {target.name}", p.where)
        if problem and not p.bad & {table, f"{table}.{target.required_key}"}:
            p.problems.append(problem)
    if p.problems:
        n = len(p.problems)
        raise ConfigError(f"{path}: {n} problem{'s' if n > 1 else ''}", p.problems)
    return c


# --- what follows from the declaration ---------------------------------------------------------


def reference_markdown(heading_level: int = 2) -> str:
    """The config reference as Markdown: one section per table (`## [train]`), each a table of
    key, default and meaning, generated from the declaration (for docs/config.md)."""
    return render.reference_markdown(ReleaseConfig, heading_level)


def json_schema() -> dict[str, Any]:
    """A JSON Schema (draft 4) of release.toml, for editors (`release schema`)."""
    return render.json_schema(ReleaseConfig, "release.toml (fastai-release)")


def starter_toml(
    values: dict[str, Any],
    notes: dict[str, str] | None = None,
    comments: dict[str, list[str]] | None = None,
) -> list[str]:
    """The lines of a release.toml listing every key: `values` (dotted key -> value) set, the
    rest commented out with their defaults. See `render.template`."""
    return render.template(
        ReleaseConfig, {"schema_version": SCHEMA_VERSION, **values}, notes, comments
    )
