"""Where releases come from. A source knows the release layout <base>/<model>/<version>/<file>."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Protocol

from pipeline.errors import ArtifactNotFound


class Source(Protocol):
    name: str

    def latest(self, model: str) -> str:
        """The version `latest` points at."""

    def read_bytes(self, model: str, version: str, filename: str) -> bytes:
        """A small file (the manifest, its signature)."""

    def download(self, model: str, version: str, filename: str, dest: Path) -> None:
        """Write the file's bytes to `dest` (not verified: the caller checks blake3)."""


class LocalSource:
    """A local release store or a copy of one (what `release publish --target local` writes)."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.name = f"local:{self.root}"

    def _path(self, model: str, version: str, filename: str) -> Path:
        p = self.root / model / version / filename
        if not p.is_file():
            raise ArtifactNotFound(f"{self.name}: no {model}/{version}/{filename}")
        return p

    def latest(self, model: str) -> str:
        p = self.root / model / "latest"
        if not p.is_file():
            raise ArtifactNotFound(f"{self.name}: no release of {model!r} (no {model}/latest)")
        return p.read_text(encoding="utf-8").strip()

    def read_bytes(self, model: str, version: str, filename: str) -> bytes:
        return self._path(model, version, filename).read_bytes()

    def download(self, model: str, version: str, filename: str, dest: Path) -> None:
        shutil.copyfile(self._path(model, version, filename), dest)


def parse_source(spec: str) -> Source:
    """A source from its command-line form; here a local directory.

    Raises:
        ValueError: the form is not supported.
    """
    if "://" in spec or spec.startswith(("hf:", "github:")):
        raise ValueError(
            f"{spec}: only local release-store directories are supported as sources so far"
        )
    return LocalSource(Path(spec).expanduser())
