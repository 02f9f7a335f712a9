"""release.toml -> a frozen, typed config. Every problem is reported at once, one line each.

Paths in release.toml are relative to the file's own directory. A data path may also be
`bundled:NAME` to use a CSV shipped inside this package (the demo dataset).
"""

from __future__ import annotations

import difflib
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, fields
from importlib import resources
from pathlib import Path
from typing import Any

from pipeline.errors import ConfigError

SCHEMA_VERSION = 1
BUNDLED_PREFIX = "bundled:"
QUANTIZABLE_MODULES = ("lstm", "linear", "embedding")
QUANTIZED_ENGINES = ("auto", "x86", "fbgemm", "qnnpack", "onednn")
PUBLISH_TARGETS = ("local", "github", "huggingface", "s3")
# `release init` writes remote repos as "CHANGE-ME/<model>": `publish` refuses them until set.
PLACEHOLDER_OWNER = "CHANGE-ME"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
_VERSION = re.compile(r"^\d+\.\d+\.\d+([.-]?[A-Za-z0-9.]+)?$")
_GITHUB_REPO = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})/[A-Za-z0-9._-]{1,100}$")
_HF_REPO = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_S3_PREFIX = re.compile(r"^[A-Za-z0-9!_.*'()/-]*$")
_TAG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+/-]{0,127}$")


@dataclass(frozen=True)
class ModelConfig:
    name: str
    version: str
    description: str


@dataclass(frozen=True)
class DataConfig:
    train_csv: Path | None
    eval_csv: Path
    text_column: str
    label_column: str
    challenge_csv: Path | None = None  # queries phrased unlike the training data (optional)


@dataclass(frozen=True)
class TrainConfig:
    export_pkl: Path | None
    seed: int
    epochs: int
    lr: float
    batch_size: int
    drop_mult: float
    min_freq: int
    max_vocab: int
    seq_len: int
    valid_pct: float
    emb_sz: int
    n_hid: int
    n_layers: int
    lm_epochs: int
    lm_lr: float
    wd: float
    label_smoothing: float
    threads: int
    pretrained: bool
    pretrained_weights: Path | None
    pretrained_vocab: Path | None
    word_dropout: float | None = None  # unset: fastai's embedding dropout (0.05 x drop_mult)
    ema_decay: float = 0.0  # 0: off; else export a moving average of the weights over the steps
    phrase_dropout: float = 0.0  # share of training texts shown without their phrasing words
    unk_dropout: float = 0.0  # share of training words shown as xxunk
    tokenizer: str = "words"  # "subwords": fastai's SentencePieceTokenizer (no onnx variant)
    typo_aliases: bool = False  # one-slip misspellings of common words map to them
    case_markers: bool = True  # fastai's xxmaj/xxup tokens; false: texts are only lowercased


@dataclass(frozen=True)
class QuantizeConfig:
    modules: tuple[str, ...]
    engine: str


@dataclass(frozen=True)
class ValidateConfig:
    threads: int
    warmup: int
    latency_queries: int
    golden_queries: int
    min_size_ratio: float
    min_speedup: float
    max_accuracy_drop: float
    min_agreement: float
    min_accuracy: float | None  # unset: no absolute accuracy gate (the baselines judge the model)
    max_p95_ms: float | None  # unset: no absolute latency gate (it depends on the machine)
    beat_majority: bool = True
    max_baseline_deficit: float = 5.0
    min_challenge_accuracy: float | None = None  # gates on [data] challenge_csv, when set
    max_challenge_baseline_deficit: float | None = None


@dataclass(frozen=True)
class OnnxConfig:
    enabled: str | bool  # "auto": build it when the learner is supported, else skip with the reason


@dataclass(frozen=True)
class BuildConfig:
    dir: Path


@dataclass(frozen=True)
class GitHubTarget:
    """[publish.github]: a GitHub repository's Releases."""

    repo: str | None = None  # "owner/name"
    tag_pattern: str = "v{version}"
    release_name: str = "{model} {version}"
    prerelease: bool = False
    pause_between_writes: float = 1.0  # GitHub asks for >= 1 s between writes (secondary limits)

    def tag(self, model: str, version: str) -> str:
        return self.tag_pattern.format(model=model, version=version)


def is_placeholder(repo: str | None) -> bool:
    """True for a repo name `release init` left for the user to fill in."""
    return bool(repo) and repo.split("/", 1)[0] == PLACEHOLDER_OWNER


@dataclass(frozen=True)
class HubTarget:
    """[publish.huggingface]: a Hugging Face Hub model repository."""

    repo: str | None = None  # "org/name"
    private: bool = False
    tag_pattern: str = "v{version}"
    tags: tuple[str, ...] = ()
    license: str = ""
    # `from_pretrained_fastai` downloads the whole snapshot: the original stays off the Hub
    variants: tuple[str, ...] = ("quantized", "onnx")

    def tag(self, model: str, version: str) -> str:
        return self.tag_pattern.format(model=model, version=version)


@dataclass(frozen=True)
class S3Target:
    """[publish.s3]: a bucket (AWS S3 or any S3-compatible store) holding the release-store
    layout under `prefix`. Credentials come from boto3's standard chain, never from here."""

    bucket: str | None = None
    prefix: str = ""
    endpoint_url: str | None = None  # R2, MinIO, B2, GCS...; default: AWS (or $AWS_ENDPOINT_URL)
    region: str | None = None

    @property
    def repo(self) -> str | None:  # what publishers_for checks: the target's required key
        return self.bucket


@dataclass(frozen=True)
class PublishConfig:
    targets: tuple[str, ...]
    local_root: Path
    github: GitHubTarget = GitHubTarget()
    huggingface: HubTarget = HubTarget()
    s3: S3Target = S3Target()


@dataclass(frozen=True)
class ReleaseConfig:
    """The whole of release.toml, checked."""

    path: Path
    schema_version: int
    model: ModelConfig
    data: DataConfig
    train: TrainConfig
    quantize: QuantizeConfig
    validate: ValidateConfig
    build: BuildConfig
    publish: PublishConfig
    onnx: OnnxConfig = OnnxConfig("auto")

    @property
    def build_dir(self) -> Path:
        """Where `release build` writes this version: <build.dir>/<version>."""
        return self.build.dir / self.model.version


# --- field specs -----------------------------------------------------------------------------

Check = Callable[[Any], str | None]


@dataclass(frozen=True)
class Field:
    type: str  # "str" | "int" | "float" | "bool" | "auto_bool" | "path" | "str_list"
    default: Any = None  # None with required=True means no default
    required: bool = False
    check: Check | None = None


def _range(lo: float | None = None, hi: float | None = None) -> Check:
    def check(v: Any) -> str | None:
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            bounds = (
                f">= {lo}" if hi is None else f"<= {hi}" if lo is None else f"between {lo} and {hi}"
            )
            return f"a number {bounds}"
        return None

    return check


def _valid_pct(v: Any) -> str | None:
    # 0 trains on every row (nothing held out to watch); a sliver would be noise, not a check
    return None if v == 0 or 0.01 <= v <= 0.5 else "0 (train on every row) or between 0.01 and 0.5"


def _pattern(rx: re.Pattern[str], what: str) -> Check:
    return lambda v: None if rx.fullmatch(v) else what


def _subset(allowed: tuple[str, ...]) -> Check:
    def check(v: Any) -> str | None:
        bad = [x for x in v if x not in allowed]
        return f"a list of {', '.join(allowed)}" if bad or len(set(v)) != len(v) else None

    return check


def _one_of(allowed: tuple[str, ...]) -> Check:
    return lambda v: None if v in allowed else f"one of {', '.join(allowed)}"


def _repo(rx: re.Pattern[str], shape: str) -> Check:
    return lambda v: (
        None if rx.fullmatch(v) and ".." not in v and "--" not in v.split("/")[-1] else f'"{shape}"'
    )


def _tag_pattern(v: str) -> str | None:
    """A tag pattern needs {version}, may use {model}, and must give a valid git tag."""
    expected = 'a tag pattern with "{version}" (and optionally "{model}"), like "v{version}"'
    if "{version}" not in v:
        return expected
    try:
        tag = v.format(version="1.0.0", model="m")
    except (KeyError, IndexError, ValueError):
        return expected
    if not _TAG.fullmatch(tag) or ".." in tag or tag.endswith((".lock", "/", ".")):
        return expected
    return None


def _hub_variants(v: list[str]) -> str | None:
    allowed = ("quantized", "original", "onnx")
    if "quantized" not in v or any(x not in allowed for x in v) or len(set(v)) != len(v):
        return 'a list of "quantized" (required: model.pkl is the quantized learner), "original", "onnx"'
    return None


def _s3_prefix(v: str) -> str | None:
    parts = v.strip("/").split("/")
    if not _S3_PREFIX.match(v) or (v.strip("/") and any(p in ("", ".", "..") for p in parts)):
        return 'a key prefix like "releases" or "team/models" (no empty, "." or ".." parts)'
    return None


def _http_url(v: str) -> str | None:
    return None if re.match(r"^https?://[^/\s]+(/\S*)?$", v) else "an http(s):// URL"


def _name_pattern(v: str) -> str | None:
    try:
        v.format(version="1.0.0", model="m")
    except (KeyError, IndexError, ValueError):
        return 'a name with only "{model}" and "{version}" placeholders'
    return None


SPEC: dict[str, dict[str, Field]] = {
    "model": {
        "name": Field(
            "str", required=True, check=_pattern(_NAME, "a name of letters, digits, '.', '_', '-'")
        ),
        "version": Field("str", required=True, check=_pattern(_VERSION, 'a version like "1.2.0"')),
        "description": Field("str", ""),
    },
    "data": {
        "train_csv": Field("path", None),
        "eval_csv": Field("path", required=True),
        "text_column": Field("str", "text"),
        "label_column": Field("str", "label"),
        "challenge_csv": Field("path", None),
    },
    "train": {
        "export_pkl": Field("path", None),
        "seed": Field("int", 42, check=_range(0)),
        "epochs": Field("int", 30, check=_range(1, 10_000)),
        "lr": Field("float", 1e-2, check=_range(1e-7, 10)),
        "batch_size": Field("int", 32, check=_range(1, 65_536)),
        "drop_mult": Field("float", 0.3, check=_range(0, 1)),
        "min_freq": Field("int", 1, check=_range(1)),
        "max_vocab": Field("int", 60_000, check=_range(10)),
        "seq_len": Field("int", 72, check=_range(1)),
        "valid_pct": Field("float", 0.1, check=_valid_pct),
        "emb_sz": Field("int", 400, check=_range(2)),
        "n_hid": Field("int", 1152, check=_range(2)),
        "n_layers": Field("int", 3, check=_range(1, 16)),
        "lm_epochs": Field("int", 0, check=_range(0, 10_000)),
        "lm_lr": Field("float", 2e-3, check=_range(1e-7, 10)),
        "wd": Field("float", 0.01, check=_range(0, 10)),
        "label_smoothing": Field("float", 0.0, check=_range(0, 0.5)),
        "word_dropout": Field("float", None, check=_range(0, 0.9)),
        "ema_decay": Field("float", 0.0, check=_range(0, 0.9999)),
        "phrase_dropout": Field("float", 0.0, check=_range(0, 1)),
        "unk_dropout": Field("float", 0.0, check=_range(0, 0.9)),
        "tokenizer": Field("str", "words", check=_one_of(("words", "subwords"))),
        "typo_aliases": Field("bool", False),
        "case_markers": Field("bool", True),
        "threads": Field("int", 0, check=_range(0, 1024)),
        "pretrained": Field("bool", False),
        "pretrained_weights": Field("path", None),
        "pretrained_vocab": Field("path", None),
    },
    "quantize": {
        "modules": Field("str_list", list(QUANTIZABLE_MODULES), check=_subset(QUANTIZABLE_MODULES)),
        "engine": Field("str", "auto", check=_one_of(QUANTIZED_ENGINES)),
    },
    "validate": {
        "threads": Field("int", 1, check=_range(1, 1024)),
        "warmup": Field("int", 5, check=_range(0)),
        "latency_queries": Field("int", 60, check=_range(2)),
        "golden_queries": Field("int", 14, check=_range(1, 1000)),
        "min_size_ratio": Field("float", 5.0, check=_range(0)),
        "min_speedup": Field("float", 4.0, check=_range(0)),
        "max_accuracy_drop": Field("float", 1.0, check=_range(0, 100)),
        "min_agreement": Field("float", 0.99, check=_range(0, 1)),
        "min_accuracy": Field("float", None, check=_range(0, 1)),
        "max_p95_ms": Field("float", None, check=_range(0.001)),
        "beat_majority": Field("bool", True),
        "max_baseline_deficit": Field("float", 5.0, check=_range(0, 100)),
        "min_challenge_accuracy": Field("float", None, check=_range(0, 1)),
        "max_challenge_baseline_deficit": Field("float", None, check=_range(-100, 100)),
    },
    "onnx": {
        "enabled": Field("auto_bool", "auto"),
    },
    "build": {
        "dir": Field("path", "artifacts/build"),
    },
    "publish": {
        "targets": Field("str_list", ["local"], check=_subset(PUBLISH_TARGETS)),
    },
    "publish.local": {
        "root": Field("path", "artifacts/releases"),
    },
    "publish.github": {
        "repo": Field("str", None, check=_repo(_GITHUB_REPO, "owner/name")),
        "tag_pattern": Field("str", "v{version}", check=_tag_pattern),
        "release_name": Field("str", "{model} {version}", check=_name_pattern),
        "prerelease": Field("bool", False),
        "pause_between_writes": Field("float", 1.0, check=_range(0, 60)),
    },
    "publish.huggingface": {
        "repo": Field("str", None, check=_repo(_HF_REPO, "org/name")),
        "private": Field("bool", False),
        "tag_pattern": Field("str", "v{version}", check=_tag_pattern),
        "tags": Field("str_list", []),
        "license": Field("str", ""),
        "variants": Field("str_list", ["quantized", "onnx"], check=_hub_variants),
    },
    "publish.s3": {
        "bucket": Field(
            "str", None, check=_pattern(_BUCKET, "an S3 bucket name (3-63 of a-z, 0-9, '.', '-')")
        ),
        "prefix": Field("str", "", check=_s3_prefix),
        "endpoint_url": Field("str", None, check=_http_url),
        "region": Field("str", None),
    },
}

_TYPE_NAMES = {
    "str": "a string",
    "int": "an integer",
    "float": "a number",
    "bool": "true or false",
    "auto_bool": '"auto", true or false',
    "path": "a path string",
    "str_list": "a list of strings",
}


def _type_ok(kind: str, v: Any) -> bool:
    if kind in ("str", "path"):
        return isinstance(v, str)
    if kind == "int":
        return isinstance(v, int) and not isinstance(v, bool)
    if kind == "float":
        return isinstance(v, int | float) and not isinstance(v, bool)
    if kind == "bool":
        return isinstance(v, bool)
    if kind == "auto_bool":
        return isinstance(v, bool) or v == "auto"
    if kind == "str_list":
        return isinstance(v, list) and all(isinstance(x, str) for x in v)
    raise AssertionError(kind)


def _describe(v: Any) -> str:
    text = repr(v) if not isinstance(v, dict) else "a table"
    return f"{type(v).__name__} {text[:60]}" if not isinstance(v, dict) else text


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


def from_dict(raw: dict[str, Any], path: Path) -> ReleaseConfig:
    """Check a parsed release.toml mapping (see `load`)."""
    root = path.parent.resolve()
    problems: list[str] = []
    where = path.name

    def problem(key: str, expected: str, found: str) -> None:
        problems.append(f"{where}: {key}: expected {expected}, found {found}")

    schema = raw.get("schema_version")
    if schema is None:
        problem("schema_version", f"the integer {SCHEMA_VERSION}", "nothing")
    elif schema != SCHEMA_VERSION:
        problem("schema_version", f"the integer {SCHEMA_VERSION}", _describe(schema))

    # Flatten nested tables into dotted section names ("publish.local").
    sections: dict[str, dict[str, Any]] = {}
    known_top = {s.split(".")[0] for s in SPEC} | {"schema_version"}
    for key, value in raw.items():
        if key == "schema_version":
            continue
        if key not in known_top:
            hint = difflib.get_close_matches(key, sorted(known_top), n=1)
            problems.append(
                f"{where}: {key}: unknown key" + (f" (did you mean {hint[0]}?)" if hint else "")
            )
            continue
        if not isinstance(value, dict):
            problem(key, "a table", _describe(value))
            continue
        sections[key] = {}
        for k, v in value.items():
            if isinstance(v, dict) and f"{key}.{k}" in SPEC:
                sections[f"{key}.{k}"] = v
            else:
                sections[key][k] = v

    values: dict[str, dict[str, Any]] = {}
    for section, spec in SPEC.items():
        given = sections.get(section, {})
        out: dict[str, Any] = {}
        for k in given:
            if k not in spec:
                options = list(spec) + [
                    s.split(".", 1)[1] for s in SPEC if s.startswith(section + ".")
                ]
                hint = difflib.get_close_matches(k, options, n=1)
                problems.append(
                    f"{where}: {section}.{k}: unknown key"
                    + (f" (did you mean {section}.{hint[0]}?)" if hint else "")
                )
        for k, f in spec.items():
            key = f"{section}.{k}"
            if k not in given:
                if f.required:
                    problem(key, _TYPE_NAMES[f.type], "nothing (the key is required)")
                out[k] = f.default
                continue
            v = given[k]
            if not _type_ok(f.type, v):
                problem(key, _TYPE_NAMES[f.type], _describe(v))
                out[k] = f.default
                continue
            if f.type == "float":
                v = float(v)
            if f.check and (expected := f.check(v)):
                problem(key, expected, _describe(v))
            out[k] = v
        values[section] = out

    def path_of(section: str, key: str, must_exist: bool, what: str) -> Path | None:
        v = values[section][key]
        if v in (None, ""):
            return None
        p = resolve_path(v, root)
        if must_exist and not p.is_file():
            problems.append(
                f"{where}: {section}.{key}: expected an existing {what}, found no file at {p}"
            )
        return p

    d, t = values["data"], values["train"]
    export_pkl = path_of("train", "export_pkl", True, "fastai export.pkl")
    train_csv = path_of("data", "train_csv", True, "CSV file")
    if (
        export_pkl is None
        and train_csv is None
        and not any(p.startswith(f"{where}: data.train_csv") for p in problems)
    ):
        problem(
            "data.train_csv",
            "a CSV path (or train.export_pkl to load a trained learner)",
            "nothing",
        )
    if t["typo_aliases"] and t["export_pkl"] is not None:
        # a loaded learner is released byte for byte; the aliases are added after training here
        problem(
            "train.typo_aliases",
            "false with train.export_pkl (they are added to learners trained here; for your own, "
            "call pipeline.typo_aliases.add_to_learner before learn.export)",
            "true",
        )
    if not t["case_markers"] and t["export_pkl"] is not None:
        # a loaded learner keeps the tokenizer rules it was trained with
        problem(
            "train.case_markers", "true with train.export_pkl (the learner's rules stay)", "false"
        )
    eval_csv = path_of("data", "eval_csv", True, "CSV file")
    challenge_csv = path_of("data", "challenge_csv", True, "CSV file")
    weights = path_of("train", "pretrained_weights", True, "weights file (.pth)")
    vocab = path_of("train", "pretrained_vocab", True, "vocabulary file (.pkl)")
    if (weights is None) != (vocab is None):
        problem("train.pretrained_weights/pretrained_vocab", "both set or both unset", "only one")
    elif weights is not None and not t["pretrained"]:
        problem(
            "train.pretrained",
            "true when train.pretrained_weights and pretrained_vocab are set (or remove them)",
            "false",
        )
    if t["tokenizer"] == "subwords" and t["typo_aliases"]:
        problem(
            "train.typo_aliases",
            'false with train.tokenizer = "subwords" (aliases map misspelled words to words; '
            "a subword vocabulary has pieces)",
            "true",
        )
    if t["tokenizer"] == "subwords":
        # both would only be found after training: the weights' vocabulary is words, and the
        # onnx client reproduces fastai's spaCy tokenizer only
        if t["pretrained"]:
            problem(
                "train.tokenizer",
                '"words" with train.pretrained = true (AWD_LSTM weights come with a word vocabulary)',
                '"subwords"',
            )
        if values["onnx"]["enabled"] is True:
            problem(
                "train.tokenizer",
                '"words" with onnx.enabled = true (the onnx variant needs fastai\'s spaCy '
                'tokenizer; set onnx.enabled = "auto" to release a subword model without it)',
                '"subwords"',
            )
    shapes = {"github": '"owner/name"', "huggingface": '"org/name"', "s3": "a bucket name"}
    for target in values["publish"]["targets"] or []:
        key = "bucket" if target == "s3" else "repo"
        if target in shapes and values[f"publish.{target}"][key] is None:
            problem(
                f"publish.{target}.{key}",
                f"{shapes[target]} (publish.targets includes {target})",
                "nothing",
            )
    if d["text_column"] == d["label_column"]:
        problem(
            "data.label_column", "a column other than data.text_column", repr(d["label_column"])
        )

    if problems:
        raise ConfigError(
            f"{path}: {len(problems)} problem{'s' if len(problems) > 1 else ''}", problems
        )

    m, q, v, p = values["model"], values["quantize"], values["validate"], values["publish"]
    return ReleaseConfig(
        path=path.resolve(),
        schema_version=schema,
        model=ModelConfig(**m),
        data=DataConfig(
            train_csv=train_csv,
            eval_csv=eval_csv,
            text_column=d["text_column"],
            label_column=d["label_column"],
            challenge_csv=challenge_csv,
        ),
        train=TrainConfig(
            **{
                k: t[k]
                for k in (f.name for f in fields(TrainConfig))
                if k not in ("export_pkl", "pretrained_weights", "pretrained_vocab")
            },
            export_pkl=export_pkl,
            pretrained_weights=weights,
            pretrained_vocab=vocab,
        ),
        quantize=QuantizeConfig(modules=tuple(q["modules"]), engine=q["engine"]),
        validate=ValidateConfig(**v),
        build=BuildConfig(dir=resolve_path(values["build"]["dir"], root)),
        onnx=OnnxConfig(enabled=values["onnx"]["enabled"]),
        publish=PublishConfig(
            targets=tuple(p["targets"]),
            local_root=resolve_path(values["publish.local"]["root"], root),
            github=GitHubTarget(**values["publish.github"]),
            huggingface=HubTarget(
                **{
                    **values["publish.huggingface"],
                    "tags": tuple(values["publish.huggingface"]["tags"]),
                    "variants": tuple(values["publish.huggingface"]["variants"]),
                }
            ),
            s3=S3Target(**values["publish.s3"]),
        ),
    )
