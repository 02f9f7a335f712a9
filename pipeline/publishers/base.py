"""The interface every publish target implements, and what a publish reports."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from pipeline.checksums import blake3_file
from pipeline.manifest import MANIFEST_NAME, SIGNATURE_NAME, Manifest


@dataclass
class PublishResult:
    """What one target did (or, in a dry run, would do)."""

    target: str
    state: str  # "done" | "skipped" | "failed" | "planned"
    location: str
    uploaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    message: str = ""
    actions: list[str] = field(default_factory=list)  # the plan's steps, in order
    verified: bool = False  # publish() already re-read every file and checked its blake3

    def line(self) -> str:
        parts = [f"{self.target}: {self.state}"] + ([self.location] if self.location else [])
        if self.uploaded:
            parts.append(
                f"{'would upload' if self.state == 'planned' else 'uploaded'} {len(self.uploaded)}"
            )
        if self.skipped:
            parts.append(f"{len(self.skipped)} identical skipped")
        if self.refused:
            parts.append(f"refused {', '.join(self.refused)}")
        if self.message:
            parts.append(self.message)
        return " · ".join(parts)


class Publisher(Protocol):
    name: str

    def check(self) -> None:
        """Check settings and secrets (token present and accepted, repository reachable) before
        anything is uploaded anywhere; raise a ReleaseError naming what to fix."""

    def publish(
        self, release_dir: Path, manifest: Manifest, *, dry_run: bool = False, force: bool = False
    ) -> PublishResult:
        """Publish a verified release directory. Idempotent; a different file under an existing
        version is refused unless `force`."""

    def verify(self, manifest: Manifest) -> None:
        """Re-read what was published and check every blake3; raise IntegrityError on mismatch."""


@dataclass(frozen=True)
class LocalFile:
    """One file of a release directory, with what a host must end up holding."""

    name: str
    path: Path
    size: int
    blake3: str


def local_files(release_dir: Path, manifest: Manifest) -> list[LocalFile]:
    """Every file a release publishes, measured (manifest entries are trusted: the caller ran
    verify_dir; manifest.json and its signature are measured here)."""
    release_dir = Path(release_dir)
    out = [LocalFile(f.name, release_dir / f.name, f.size, f.blake3) for f in manifest.files]
    for name in release_files(release_dir, manifest)[len(manifest.files) :]:
        p = release_dir / name
        out.append(LocalFile(name, p, p.stat().st_size, blake3_file(p)))
    return out


def release_files(release_dir: Path, manifest: Manifest) -> list[str]:
    """Names of every file a release publishes: the manifest's files, the manifest, its signature."""
    names = [f.name for f in manifest.files] + [MANIFEST_NAME]
    if (Path(release_dir) / SIGNATURE_NAME).is_file():
        names.append(SIGNATURE_NAME)
    return names
