"""`release build`: run the stages for a config and return the finished build's manifest."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict

from filelock import FileLock, Timeout

from pipeline.checksums import blake3_bytes, blake3_file
from pipeline.config import ReleaseConfig
from pipeline.environment import library_versions
from pipeline.errors import ReleaseError
from pipeline.learner_file import input_digest
from pipeline.manifest import MANIFEST_NAME, SIGNATURE_NAME, Manifest, verify_dir
from pipeline.stages import BuildContext, run_stages, stages_for
from pipeline.versions import version_dir

log = logging.getLogger("pipeline.build")


def build_key(config: ReleaseConfig) -> str:
    """Fingerprint of every input of a build: config (less publishing), data bytes, libraries."""
    d = asdict(config)
    for k in ("path", "publish", "build"):
        d.pop(k)
    files = [config.data.train_csv, config.data.eval_csv, config.data.challenge_csv]
    # export_pkl's digest: a remote learner's pin (a key never downloads)
    d["file_digests"] = [blake3_file(p) if p else None for p in files]
    d["file_digests"].append(input_digest(config.train))
    d["libraries"] = library_versions()
    return blake3_bytes(json.dumps(d, sort_keys=True, default=str).encode())


def current_build(config: ReleaseConfig) -> Manifest | None:
    """The build directory's manifest when it is complete, verified and built from these inputs."""
    try:
        manifest = verify_dir(config.build_dir)
    except ReleaseError:
        return None
    return manifest if manifest.build_key == build_key(config) else None


def already_released(config: ReleaseConfig) -> str | None:
    """A warning when this version is already in the local store (versions are immutable)."""
    target = version_dir(config.publish.local_root, config.model.name, config.model.version)
    if not (target / MANIFEST_NAME).is_file():
        return None
    return (
        f"{config.model.name} {config.model.version} is already published in the local store "
        f"({target}); unless this build reproduces its files exactly, `release publish` will "
        f"refuse it: bump [model] version in {config.path.name} to release a new model"
    )


def build(
    config: ReleaseConfig, *, force: bool = False, timings: dict[str, float] | None = None
) -> Manifest:
    """Run every stage; return the manifest of the finished build.

    `timings`, when given, receives each stage's seconds (benchmarks read them).

    Raises:
        ReleaseError: any stage failed (GateFailed when a gate did); the build directory then
            holds no manifest, so nothing from it can be published.
    """
    build_dir = config.build_dir
    build_dir.mkdir(parents=True, exist_ok=True)
    lock = FileLock(build_dir / ".build.lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise ReleaseError(
            f"{build_dir}: another `release build` is running on this directory; wait for it "
            "to finish, then run this command again"
        ) from None
    try:
        # A manifest from an earlier build would vouch for files this build overwrites.
        for name in (MANIFEST_NAME, SIGNATURE_NAME):
            (build_dir / name).unlink(missing_ok=True)
        ctx = BuildContext(
            config=config, build_dir=build_dir, force=force, build_key=build_key(config)
        )
        log.info("building %s %s in %s", config.model.name, config.model.version, build_dir)
        if warning := already_released(config):
            log.warning("warning: %s", warning)
        try:
            run_stages(stages_for(config), ctx)
        finally:
            if timings is not None:
                timings.update(ctx.stage_seconds)
        return Manifest.read(build_dir)
    finally:
        lock.release()
