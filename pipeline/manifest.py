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

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


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
        """Parse and check a manifest mapping.

        Raises:
            InputError: a field is missing or of the wrong shape (every problem is listed).
        """
        problems: list[str] = []

        def need(key: str, typ: type | tuple[type, ...]) -> Any:
            if not isinstance(data, dict) or key not in data:
                problems.append(f"{key}: missing")
                return None
            value = data[key]
            if not isinstance(value, typ) or (typ is int and isinstance(value, bool)):
                problems.append(
                    f"{key}: expected {getattr(typ, '__name__', typ)}, found {type(value).__name__}"
                )
                return None
            return value

        if not isinstance(data, dict):
            raise InputError(f"{source}: expected a JSON object, found {type(data).__name__}")
        schema = need("schema_version", int)
        if schema is not None and schema > SCHEMA_VERSION:
            problems.append(
                f"schema_version: this fastai-release reads up to {SCHEMA_VERSION}, found {schema}; upgrade fastai-release"
            )
        model = need("model", str)
        version = need("version", str)
        labels = need("labels", list)
        raw_files = need("files", list)
        environment = need("environment", dict)
        created = need("created", str)
        files: list[FileEntry] = []
        for i, f in enumerate(raw_files or []):
            try:
                entry = FileEntry(
                    name=f["name"],
                    size=f["size"],
                    blake3=f["blake3"],
                    variant=f.get("variant"),
                    kind=f.get("kind", "model"),
                )
            except (TypeError, KeyError) as e:
                problems.append(f"files[{i}]: expected name, size, blake3; {e!r}")
                continue
            if (
                not isinstance(entry.name, str)
                or not _SAFE_NAME.match(entry.name)
                or entry.name == MANIFEST_NAME
            ):
                problems.append(
                    f"files[{i}].name: expected a plain file name, found {entry.name!r}"
                )
            if not isinstance(entry.size, int) or entry.size < 0:
                problems.append(
                    f"files[{i}].size: expected a non-negative integer, found {entry.size!r}"
                )
            if not isinstance(entry.blake3, str) or not _HEX64.match(entry.blake3):
                problems.append(
                    f"files[{i}].blake3: expected 64 lowercase hex digits, found {entry.blake3!r}"
                )
            files.append(entry)
        golden = []
        for i, g in enumerate(data.get("golden_queries") or []):
            if (
                isinstance(g, dict)
                and isinstance(g.get("text"), str)
                and isinstance(g.get("expected"), str)
            ):
                golden.append(GoldenQuery(g["text"], g["expected"]))
            else:
                problems.append(f"golden_queries[{i}]: expected {{text, expected}} strings")
        if problems:
            raise InputError(
                f"{source}: not a valid release manifest:\n"
                + "\n".join(f"  - {p}" for p in problems)
            )
        return cls(
            schema_version=schema,
            model=model,
            version=version,
            labels=tuple(str(x) for x in labels),
            files=tuple(files),
            environment={str(k): str(v) for k, v in environment.items()},
            created=created,
            git_commit=data.get("git_commit"),
            description=str(data.get("description", "")),
            build_key=str(data.get("build_key", "")),
            validation=data.get("validation") or {},
            golden_queries=tuple(golden),
            tool=str(data.get("tool", "")),
        )

    @classmethod
    def from_json(cls, text: str | bytes, source: str = MANIFEST_NAME) -> Manifest:
        try:
            data = json.loads(text)
        except (ValueError, UnicodeDecodeError) as e:
            raise InputError(f"{source}: not valid JSON: {e}") from e
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
