"""The local release store: <root>/<model>/<version>/ plus a <root>/<model>/latest pointer file.

The same layout serves as a static mirror: copy the root to any web server or bucket. A version
appears only complete (staged in a hidden directory, verified, renamed into place) and never
changes afterwards unless forced.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from filelock import FileLock

from pipeline import atomic
from pipeline.checksums import blake3_file
from pipeline.errors import IntegrityError
from pipeline.manifest import MANIFEST_NAME, Manifest, verify_dir
from pipeline.publishers.base import Plan, PlanApply, PublishResult, release_files, version_exists
from pipeline.versions import LATEST, newer, version_dir

log = logging.getLogger("pipeline.publish")


class LocalStore(PlanApply):
    """A release store in a local directory."""

    name = "local"

    def __init__(self, root: Path):
        self.root = Path(root)

    def check(self) -> None:
        """Nothing to check before publishing: the root is created on first use."""

    def version_dir(self, model: str, version: str) -> Path:
        return version_dir(self.root, model, version)

    def latest(self, model: str) -> str | None:
        """The version the `latest` pointer names, or None."""
        p = self.root / model / LATEST
        return p.read_text(encoding="utf-8").strip() if p.is_file() else None

    def _compare(
        self, release_dir: Path, target: Path, names: list[str]
    ) -> tuple[list[str], list[str]]:
        same, different = [], []
        for name in names:
            there = target / name
            if there.is_file() and blake3_file(there) == blake3_file(release_dir / name):
                same.append(name)
            else:
                different.append(name)
        extra = sorted({p.name for p in target.iterdir() if p.is_file()} - set(names))
        return same, different + extra

    def plan(self, release_dir: Path, manifest: Manifest, *, force: bool = False) -> Plan:
        """What the store holds of this version and what publishing would copy (read-only).

        Raises:
            IntegrityError: the release directory does not match its manifest.
        """
        release_dir = Path(release_dir)
        verify_dir(release_dir, manifest)
        names = release_files(release_dir, manifest)
        target = self.version_dir(manifest.model, manifest.version)
        plan = Plan(
            self.name,
            str(target),
            release_dir,
            manifest,
            force=force,
            sizes={n: (release_dir / n).stat().st_size for n in names},
        )
        latest = self.latest(manifest.model)
        moves = newer(manifest.version, latest)
        if target.is_dir():
            plan.published = True
            same, different = self._compare(release_dir, target, names)
            plan.skipped = same
            if not different:
                plan.noop = True
                plan.message = "identical version already published"
                if moves:
                    plan.steps.append(f"point {manifest.model}/latest at {manifest.version}")
                return plan
            plan.refused = different
            if not force:
                return plan
            plan.upload = [n for n in names if n not in same]
            plan.steps.append(
                f"replace {target} with the build's {len(names)} files (--force; staged, verified, "
                "swapped in whole)"
            )
        else:
            plan.upload = names
            plan.steps.append(f"copy {len(names)} files into {target} (staged, verified, renamed)")
        if moves:
            plan.steps.append(f"point {manifest.model}/latest at {manifest.version}")
        return plan

    def apply(self, plan: Plan) -> PublishResult:
        """Carry out a plan under the store's lock, comparing again what it holds by then.

        Raises:
            IntegrityError: the copy does not match the manifest.
            VersionExistsError: this version is published with other files and the plan is not
                forced.
        """
        manifest, release_dir = plan.manifest, plan.release_dir
        model_dir = self.root / manifest.model
        model_dir.mkdir(parents=True, exist_ok=True)
        with FileLock(model_dir / ".publish.lock", timeout=600):
            atomic.remove_stale_staging(model_dir)  # left by a publish that was killed
            locked = self.plan(release_dir, manifest, force=plan.force)  # as of now, locked
            locked.config_name = plan.config_name
            plan = locked
            result = PublishResult.applying(plan)
            if plan.noop:
                self._update_latest(manifest)
                return result
            if plan.blocked:
                raise version_exists(plan)
            names = release_files(release_dir, manifest)
            target = self.version_dir(manifest.model, manifest.version)
            # A forced replacement swaps the whole version directory (see atomic.staged_dir).
            with atomic.staged_dir(target) as staging:
                for name in names:
                    shutil.copyfile(release_dir / name, staging / name)
                verify_dir(staging, manifest)
                if Manifest.read(staging) != manifest:
                    raise IntegrityError(
                        f"{staging / MANIFEST_NAME}: copy differs from {release_dir / MANIFEST_NAME}; "
                        "nothing was published: run the same command again"
                    )
            result.uploaded, result.skipped = names, []
            self._update_latest(manifest)
        return result

    def _update_latest(self, manifest: Manifest) -> None:
        current = self.latest(manifest.model)
        if current is None or not newer(current, manifest.version):
            atomic.write_text(self.root / manifest.model / LATEST, manifest.version + "\n")

    def verify(self, manifest: Manifest) -> None:
        """Check the published copy against `manifest`."""
        target = self.version_dir(manifest.model, manifest.version)
        published = verify_dir(target)
        if published != manifest:
            raise IntegrityError(
                f"{target / MANIFEST_NAME}: differs from the build's manifest; publish the build "
                "again with --force to replace the published version"
            )
