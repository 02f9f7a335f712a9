"""The contract every publish target implements: check, plan (read-only), apply, verify.

`plan()` reads the target and says what exists, what would be uploaded, skipped or refused, and
the steps `apply()` would take, without changing anything: a dry run is the plan alone, printed
by `describe_plan`. `apply(plan)` carries the plan out (re-reading what it must) and returns a
`PublishResult`. A version published with other files is refused by `version_exists`, the one
place that error is worded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from pipeline.checksums import blake3_file
from pipeline.errors import VersionExistsError
from pipeline.manifest import MANIFEST_NAME, SIGNATURE_NAME, Manifest


def size_text(n: int) -> str:
    return f"{n / 1e6:.2f} MB" if n >= 1e6 else f"{n / 1e3:.1f} kB"


@dataclass
class Plan:
    """What one target holds of a release and what publishing it would do (read-only).

    Attributes:
        target: the publisher's name ("local", "github", ...).
        location: where, in words (a directory, `owner/repo release v1.0.0`, `s3://b/p/m/1.0.0`).
        release_dir, manifest, force: what the plan was made for.
        upload: files that would be written (missing, or different and replaceable).
        skipped: files already there, identical.
        refused: files there with other content (or extra) under a published version; `apply`
            raises `version_exists` unless `force`.
        steps: what `apply` would do, in order, one line each.
        noop: the identical version is already published: `apply` changes nothing.
        published: the version is visible on the target (a refusal needs this).
        sizes: bytes of each local file, for the printout.
        state: what the publisher read and `apply` reuses (private to it).
    """

    target: str
    location: str
    release_dir: Path
    manifest: Manifest
    force: bool = False
    upload: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    steps: list[str] = field(default_factory=list)
    noop: bool = False
    published: bool = False
    sizes: dict[str, int] = field(default_factory=dict)
    message: str = ""
    state: Any = None
    config_name: str = "release.toml"  # the config file in use, for the refusal's advice

    @property
    def blocked(self) -> bool:
        """A published version holds other files and the plan is not forced."""
        return bool(self.refused) and not self.force


def version_exists(plan: Plan) -> VersionExistsError:
    """The refusal of a version published with other files (the only wording of it)."""
    names = plan.refused
    m = plan.manifest
    return VersionExistsError(
        f"{plan.target}: {plan.location}: version {m.version} of {m.model} is already published "
        f"with other files ({', '.join(names)} differ{'s' if len(names) == 1 else ''} from the build); "
        f"versions are immutable: bump [model] version in {plan.config_name}, or pass --force to "
        "replace the published files"
    )


def describe_plan(result: PublishResult) -> list[str]:
    """The dry-run printout of one target: a summary line, the plan's steps, then every file's
    fate (the only place a plan is printed)."""
    lines = [result.line()]
    plan = result.plan
    if plan is None:
        return lines
    lines += [f"  - {s}" for s in plan.steps]
    for name in plan.upload:
        size = plan.sizes.get(name)
        lines.append(f"  upload     {name}" + (f" ({size_text(size)})" if size is not None else ""))
    lines += [f"  identical  {name}" for name in plan.skipped]
    lines += [f"  refuse     {name} (differs from the published file)" for name in plan.refused]
    return lines


@dataclass
class PublishResult:
    """What one target did (or, for a dry run, would do)."""

    target: str
    state: str  # "done" | "skipped" | "failed" | "planned"
    location: str
    uploaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    message: str = ""
    actions: list[str] = field(default_factory=list)  # the plan's steps, in order
    verified: bool = False  # apply() already re-read every file and checked its blake3
    plan: Plan | None = field(default=None, repr=False, compare=False)  # a dry run's plan

    @classmethod
    def from_plan(cls, plan: Plan) -> PublishResult:
        message = plan.message
        if plan.blocked and not message:
            message = "version exists with other files (--force replaces them)"
        return cls(
            plan.target,
            "planned",
            plan.location,
            uploaded=list(plan.upload),
            skipped=list(plan.skipped),
            refused=list(plan.refused) if plan.blocked else [],
            message=message,
            actions=list(plan.steps),
            plan=plan,
        )

    @classmethod
    def applying(cls, plan: Plan) -> PublishResult:
        """The result `apply` fills in: "done", or "skipped" for a plan with nothing to do."""
        return cls(
            plan.target,
            "skipped" if plan.noop else "done",
            plan.location,
            skipped=list(plan.skipped),
            message=plan.message if plan.noop else "",
            actions=list(plan.steps),
        )

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

    def plan(self, release_dir: Path, manifest: Manifest, *, force: bool = False) -> Plan:
        """What exists and what publishing would do; changes nothing."""

    def apply(self, plan: Plan) -> PublishResult:
        """Carry a plan out. Raises `version_exists(plan)` when the plan is blocked."""

    def verify(self, manifest: Manifest) -> None:
        """Re-read what was published and check every blake3; raise IntegrityError on mismatch."""

    def publish(
        self, release_dir: Path, manifest: Manifest, *, dry_run: bool = False, force: bool = False
    ) -> PublishResult:
        """`apply(plan(...))`, or the plan as a result for a dry run."""


class PlanApply:
    """The `publish()` every publisher shares: plan, then (unless a dry run) apply."""

    def publish(
        self, release_dir: Path, manifest: Manifest, *, dry_run: bool = False, force: bool = False
    ) -> PublishResult:
        plan = self.plan(release_dir, manifest, force=force)  # type: ignore[attr-defined]
        if dry_run:
            return PublishResult.from_plan(plan)
        return self.apply(plan)  # type: ignore[attr-defined]


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
