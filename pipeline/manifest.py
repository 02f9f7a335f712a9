"""The release manifest: schema, reading, writing and verification of a release directory.

The manifest is the single authority on what a release contains. It is read by the client on
servers, so parsing is strict and never trusts a field it did not check. No torch/fastai here.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pipeline import atomic
from pipeline.checksums import blake3_file
from pipeline.errors import ArtifactNotFound, InputError, IntegrityError

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"
SIGNATURE_NAME = "model.sig"  # an OpenSSF Model Signing bundle (pipeline/signing.py)
ORIGINAL_FILE = "export.pkl"
QUANTIZED_FILE = "export_quantized.pkl"
ONNX_FILE = "model_int8.onnx"
TOKENIZER_FILE = "tokenizer.json"  # kind "tokenizer", variant "onnx": the onnx model needs it
VARIANT_FILES = {"original": ORIGINAL_FILE, "quantized": QUANTIZED_FILE, "onnx": ONNX_FILE}

# Used with fullmatch only: `$` also matches before a final newline ("1.0.0\n").
_HEX64 = re.compile(r"[0-9a-f]{64}")
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_SAFE_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")
MAX_NAME = 255
# Names a release's own files may not take: they are the manifest and its signatures, which are
# written and checked apart from the files the manifest lists. Compared case-insensitively and
# without trailing dots: on macOS's and Windows' file systems `MODEL.SIG` is `model.sig`, and
# Windows drops a trailing dot (`model.sig.`).
RESERVED_NAMES = frozenset({MANIFEST_NAME, SIGNATURE_NAME, "model.sig"})  # model.sig: OpenSSF
# A version may not be called this (in any case): it is the pointer file beside the versions.
LATEST_NAME = "latest"
VARIANTS = frozenset(VARIANT_FILES)
KINDS = frozenset({"model", "tokenizer", "report", "plot"})
# Bounds on what an unauthenticated manifest makes a server do (every trust mode):
# - the tokenizer file is parsed as JSON and held in memory: the demo's is about 3 MB (its
#   vocabulary of 6,264 words and ~86k typo aliases); 64 MB leaves room for a 60k-word
#   vocabulary with its aliases;
# - golden queries are predicted at every load: `release build` writes at most 1,000
#   (`[validate] golden_queries`, default 14), each an eval text, and no text longer than the
#   input limit (pipeline/client/limits.py: 10,000 characters) can be predicted.
MAX_TOKENIZER_SIZE = 64 * 1024 * 1024
MAX_GOLDEN_QUERIES = 1_000
MAX_GOLDEN_TEXT = 10_000
MAX_LABEL = 1_000  # characters of a golden query's expected label


def is_safe_name(name: object) -> bool:
    """A plain file name: letters, digits, `.`, `_`, `-`, not starting with a dot, no newline."""
    return isinstance(name, str) and len(name) <= MAX_NAME and bool(_SAFE_NAME.fullmatch(name))


def is_safe_version(version: object) -> bool:
    """A version usable as a directory name: letters, digits, `.`, `_`, `+`, `-`; never
    `latest` in any case (the pointer file's name)."""
    return (
        isinstance(version, str)
        and len(version) <= MAX_NAME
        and version not in (".", "..")
        and version.lower() != LATEST_NAME
        and bool(_SAFE_VERSION.fullmatch(version))
    )


def is_reserved_name(name: str) -> bool:
    """manifest.json, its signature, and any name a signature format may take beside it, in
    any case and with any trailing dots (the same file on case-insensitive file systems)."""
    folded = name.lower().rstrip(".")
    return folded in RESERVED_NAMES or folded.startswith(MANIFEST_NAME)


@dataclass(frozen=True)
class FileEntry:
    """One file of a release."""

    name: str
    size: int
    blake3: str
    variant: str | None = None  # "original" | "quantized" | "onnx"; None for reports and plots
    kind: str = "model"  # "model" | "tokenizer" | "report" | "plot"


@dataclass(frozen=True)
class GoldenQuery:
    """An eval query with its expected label, for the smoke test after loading."""

    text: str
    expected: str


@dataclass(frozen=True)
class Manifest:
    """The parsed manifest.json of a release."""

    model: str
    version: str
    labels: tuple[str, ...]
    files: tuple[FileEntry, ...]
    environment: dict[str, str]
    created: str
    git_commit: str | None = None
    description: str = ""
    build_key: str = ""
    validation: dict[str, Any] = field(default_factory=dict)
    golden_queries: tuple[GoldenQuery, ...] = ()
    tool: str = ""
    schema_version: int = SCHEMA_VERSION

    def file(self, name: str) -> FileEntry:
        """The entry for `name`.

        Raises:
            ArtifactNotFound: the manifest lists no such file.
        """
        for entry in self.files:
            if entry.name == name:
                return entry
        raise ArtifactNotFound(
            f"{MANIFEST_NAME}: no file named {name!r} in release {self.model} {self.version}"
        )

    def variant(self, variant: str) -> FileEntry:
        """The model file of a variant ("original", "quantized" or "onnx")."""
        for entry in self.files:
            if entry.variant == variant and entry.kind == "model":
                return entry
        raise ArtifactNotFound(
            f"{MANIFEST_NAME}: release {self.model} {self.version} has no {variant!r} variant"
        )

    def companions(self, variant: str) -> tuple[FileEntry, ...]:
        """The other files a variant's model needs (the onnx variant's tokenizer.json)."""
        return tuple(e for e in self.files if e.variant == variant and e.kind != "model")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["labels"] = list(self.labels)
        d["files"] = [asdict(f) for f in self.files]
        d["golden_queries"] = [asdict(g) for g in self.golden_queries]
        return {"schema_version": d.pop("schema_version"), **d}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False, ensure_ascii=False) + "\n"

    def write(self, directory: Path) -> Path:
        """Write manifest.json atomically into `directory`."""
        path = Path(directory) / MANIFEST_NAME
        atomic.write_text(path, self.to_json())
        return path

    @classmethod
    def from_dict(cls, data: Any, source: str = MANIFEST_NAME) -> Manifest:
        """Parse and check a manifest mapping: every field's type, every file entry, the names.

        Raises:
            InputError: a field is missing or of the wrong shape (every problem is listed, each
                naming its field, what was expected and what was found).
        """
        if not isinstance(data, dict):
            raise InputError(f"{source}: expected a JSON object, found {type(data).__name__}")
        r = _Fields(data)
        schema, model, version = _identity(r)
        labels = r.strings("labels", r.get("labels", list))
        raw_files = r.get("files", list)
        environment = _environment(r)
        created = r.get("created", str)
        git_commit = r.get("git_commit", str, required=False)
        description = r.get("description", str, required=False) or ""
        build_key = r.get("build_key", str, required=False) or ""
        tool = r.get("tool", str, required=False) or ""
        validation = r.get("validation", dict, required=False) or {}
        raw_golden = r.get("golden_queries", list, required=False) or []
        files = _file_entries(raw_files or [], r.problems)
        golden = _golden_queries(raw_golden, r.problems)
        if r.problems:
            shown = r.problems[:20] + (
                [f"... and {len(r.problems) - 20} more"] if len(r.problems) > 20 else []
            )
            raise InputError(
                f"{source}: not a valid release manifest:\n" + "\n".join(f"  - {p}" for p in shown)
            )
        return cls(
            schema_version=schema,
            model=model,
            version=version,
            labels=tuple(labels),
            files=tuple(files),
            environment=dict(environment or {}),
            created=created,
            git_commit=git_commit,
            description=description,
            build_key=build_key,
            validation=validation,
            golden_queries=tuple(golden),
            tool=tool,
        )

    @classmethod
    def from_json(cls, text: str | bytes, source: str = MANIFEST_NAME) -> Manifest:
        try:
            data = json.loads(text)
        except (ValueError, UnicodeDecodeError, RecursionError) as e:
            raise InputError(f"{source}: not valid JSON: {type(e).__name__}: {e}") from None
        return cls.from_dict(data, source)

    @classmethod
    def read(cls, directory: Path) -> Manifest:
        """Read `directory`/manifest.json.

        Raises:
            ArtifactNotFound: there is no manifest (not a finished build or release).
            InputError: the manifest is malformed.
        """
        path = Path(directory) / MANIFEST_NAME
        if not path.is_file():
            raise ArtifactNotFound(
                f"{path}: no manifest; this is not a finished build or release (run `release build` first)"
            )
        return cls.from_json(path.read_bytes(), str(path))


def file_entry(path: Path, variant: str | None = None, kind: str = "model") -> FileEntry:
    """Measure a file into a manifest entry."""
    path = Path(path)
    return FileEntry(
        name=path.name,
        size=path.stat().st_size,
        blake3=blake3_file(path),
        variant=variant,
        kind=kind,
    )


def check_file(path: Path, entry: FileEntry) -> str | None:
    """Compare a file with its manifest entry; return a sentence describing the mismatch, or None."""
    path = Path(path)
    if not path.is_file():
        return f"{entry.name}: missing from {path.parent}"
    size = path.stat().st_size
    if size != entry.size:
        return f"{entry.name}: {size} bytes, manifest says {entry.size}"
    digest = blake3_file(path)
    if digest != entry.blake3:
        return f"{entry.name}: blake3 {digest[:16]}…, manifest says {entry.blake3[:16]}…"
    return None


def verify_dir(directory: Path, manifest: Manifest | None = None) -> Manifest:
    """Check every file of a release directory against its manifest.

    Raises:
        ArtifactNotFound: no manifest.
        IntegrityError: any file is missing, of another size, or has another blake3 (all listed).
    """
    directory = Path(directory)
    manifest = manifest or Manifest.read(directory)
    problems = [p for entry in manifest.files if (p := check_file(directory / entry.name, entry))]
    if problems:
        raise IntegrityError(
            f"{directory}: {len(problems)} of {len(manifest.files)} files do not match {MANIFEST_NAME}:\n"
            + "\n".join(f"  - {p}" for p in problems)
            + "\nRebuild with `release build --force`, or fetch the release again."
        )
    return manifest


# -- reading a manifest mapping (Manifest.from_dict): each step lists its problems, in order --


def _found(value: Any) -> str:
    """A value as a message quotes it: its type and the start of its repr."""
    text = repr(value)
    return f"{type(value).__name__} {text[:60]}{'…' if len(text) > 60 else ''}"


class _Fields:
    """The top-level fields of a manifest mapping, and every problem found in them so far."""

    def __init__(self, data: dict[str, Any]):
        self.data = data
        self.problems: list[str] = []

    def get(self, key: str, typ: type | tuple[type, ...], required: bool = True) -> Any:
        """`data[key]` when it is there and of type `typ`, else None (and a problem, unless it
        is optional and absent or null)."""
        if key not in self.data:
            if required:
                self.problems.append(f"{key}: missing")
            return None
        value = self.data[key]
        if value is None and not required:
            return None
        if not isinstance(value, typ) or (isinstance(value, bool) and typ is int):
            name = typ.__name__ if isinstance(typ, type) else "/".join(t.__name__ for t in typ)
            self.problems.append(f"{key}: expected {name}, found {_found(value)}")
            return None
        return value

    def strings(self, key: str, value: Any) -> list[str]:
        """The list `value` of `key` when every item is a string (else [] and up to 3 problems)."""
        if value is None:
            return []
        bad = [i for i, x in enumerate(value) if not isinstance(x, str)]
        for i in bad[:3]:
            self.problems.append(f"{key}[{i}]: expected str, found {_found(value[i])}")
        return [] if bad else list(value)


def _identity(r: _Fields) -> tuple[Any, Any, Any]:
    """schema_version, model and version, each checked (None where it is not usable)."""
    schema = r.get("schema_version", int)
    if schema is not None and not 1 <= schema <= SCHEMA_VERSION:
        r.problems.append(
            f"schema_version: this fastai-release reads 1 to {SCHEMA_VERSION}, found {schema}"
            + ("; upgrade fastai-release" if schema > SCHEMA_VERSION else "")
        )
    model = r.get("model", str)
    if model is not None and not is_safe_name(model):
        r.problems.append(f"model: expected a plain name (letters, digits, . _ -), found {model!r}")
    version = r.get("version", str)
    if version is not None and version.lower() == LATEST_NAME:
        r.problems.append(
            f"version: {version!r} is the name of the pointer to the newest version, not a version"
        )
    elif version is not None and not is_safe_version(version):
        r.problems.append(
            f"version: expected letters, digits, '.', '_', '+' or '-', found {version!r}"
        )
    return schema, model, version


def _environment(r: _Fields) -> Any:
    """The environment mapping; its first 100 values checked to be strings."""
    environment = r.get("environment", dict)
    if environment is not None:
        for k, v in list(environment.items())[:100]:
            if not isinstance(v, str):
                r.problems.append(f"environment.{k}: expected str, found {_found(v)}")
    return environment


def _file_entries(raw_files: list[Any], problems: list[str]) -> list[FileEntry]:
    """The entries of `files` that pass every check; a problem for each one that does not."""
    files: list[FileEntry] = []
    seen: dict[str, str] = {}  # folded name -> name as listed
    for i, f in enumerate(raw_files):
        where = f"files[{i}]"
        if not isinstance(f, dict):
            problems.append(f"{where}: expected an object, found {_found(f)}")
            continue
        missing = [k for k in ("name", "size", "blake3") if k not in f]
        if missing:
            problems.append(f"{where}: missing {', '.join(missing)}")
            continue
        found_here = _entry_problems(where, f, seen)
        problems.extend(found_here)
        if not found_here:
            seen[f["name"].lower()] = f["name"]
            files.append(
                FileEntry(
                    f["name"], f["size"], f["blake3"], f.get("variant"), f.get("kind", "model")
                )
            )
    return files


def _entry_problems(where: str, f: dict[str, Any], seen: dict[str, str]) -> list[str]:
    """What is wrong with one file entry (which has a name, a size and a digest)."""
    name, size, digest = f["name"], f["size"], f["blake3"]
    variant, kind = f.get("variant"), f.get("kind", "model")
    problems = []
    if not is_safe_name(name):
        problems.append(f"{where}.name: expected a plain file name, found {_found(name)}")
    elif is_reserved_name(name):
        problems.append(
            f"{where}.name: {name!r} is reserved for the manifest and its signatures (in any case)"
        )
    elif name.lower() in seen:
        other = seen[name.lower()]
        problems.append(
            f"{where}.name: {name!r} is listed twice"
            if other == name
            else f"{where}.name: {name!r} and {other!r} differ only in case (one file "
            "on a case-insensitive file system)"
        )
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        problems.append(f"{where}.size: expected a non-negative integer, found {_found(size)}")
    if not isinstance(digest, str) or not _HEX64.fullmatch(digest):
        problems.append(f"{where}.blake3: expected 64 lowercase hex digits, found {_found(digest)}")
    if variant is not None and variant not in VARIANTS:
        problems.append(
            f"{where}.variant: expected one of {sorted(VARIANTS)} or null, found {_found(variant)}"
        )
    if kind not in KINDS:
        problems.append(f"{where}.kind: expected one of {sorted(KINDS)}, found {_found(kind)}")
    elif kind == "tokenizer" and isinstance(size, int) and size > MAX_TOKENIZER_SIZE:
        problems.append(
            f"{where}.size: {size:,} bytes for a tokenizer file, more than the "
            f"{MAX_TOKENIZER_SIZE:,} allowed"
        )
    return problems


def _golden_queries(raw_golden: list[Any], problems: list[str]) -> list[GoldenQuery]:
    """The golden queries within their bounds; a problem for each other one (or for too many)."""
    golden = []
    if len(raw_golden) > MAX_GOLDEN_QUERIES:
        problems.append(
            f"golden_queries: {len(raw_golden):,} queries, more than the "
            f"{MAX_GOLDEN_QUERIES:,} a build writes ([validate] golden_queries)"
        )
        raw_golden = []
    for i, g in enumerate(raw_golden):
        if (
            isinstance(g, dict)
            and isinstance(g.get("text"), str)
            and isinstance(g.get("expected"), str)
            and len(g["text"]) <= MAX_GOLDEN_TEXT
            and len(g["expected"]) <= MAX_LABEL
        ):
            golden.append(GoldenQuery(g["text"], g["expected"]))
        elif (
            isinstance(g, dict)
            and isinstance(g.get("text"), str)
            and isinstance(g.get("expected"), str)
        ):
            problems.append(
                f"golden_queries[{i}]: a text of {len(g['text']):,} characters and a label "
                f"of {len(g['expected']):,}; at most {MAX_GOLDEN_TEXT:,} and {MAX_LABEL:,}"
            )
        else:
            problems.append(
                f"golden_queries[{i}]: expected {{text, expected}} strings, found {_found(g)}"
            )
    return golden
