"""`release publish`: build if needed, then publish to each target; report every target's state."""

from __future__ import annotations

import logging

from pipeline.build import build, current_build
from pipeline.config import ReleaseConfig
from pipeline.errors import PartialPublishError, ReleaseError, UsageError
from pipeline.manifest import Manifest
from pipeline.publishers.base import Publisher, PublishResult
from pipeline.publishers.local import LocalStore

log = logging.getLogger("pipeline.publish")


def publishers_for(config: ReleaseConfig, targets: tuple[str, ...]) -> list[Publisher]:
    """The publishers for `targets` (default: [publish] targets), checked before any work."""
    out: list[Publisher] = []
    for t in targets or config.publish.targets:
        if t == "local":
            out.append(LocalStore(config.publish.local_root))
        else:
            raise UsageError(f"--target {t}: unknown target (available: local)")
    return out


def ensure_build(config: ReleaseConfig, *, rebuild: bool = False) -> Manifest:
    """The current build's manifest, building first when there is none for these inputs."""
    manifest = None if rebuild else current_build(config)
    if manifest is not None:
        log.info("using the finished build in %s", config.build_dir)
        return manifest
    log.info("no finished build for these inputs in %s: building first", config.build_dir)
    return build(config)


def publish(
    config: ReleaseConfig,
    targets: tuple[str, ...] = (),
    *,
    dry_run: bool = False,
    force: bool = False,
) -> list[PublishResult]:
    """Publish the current build to every target; each target runs even when another fails.

    Raises:
        PartialPublishError: some targets finished, others failed (exit 7).
        ReleaseError: the only target, or every target, failed (the first error is raised).
    """
    publishers = publishers_for(config, targets)
    if dry_run:
        manifest = current_build(config)
        if manifest is None:
            raise ReleaseError(
                f"{config.build_dir}: no finished build for the current inputs; a real publish would build first "
                "(run `release build`, then `release publish --dry-run` to see the plan)"
            )
    else:
        manifest = ensure_build(config)
    results: list[PublishResult] = []
    errors: list[ReleaseError] = []
    for p in publishers:
        try:
            r = p.publish(config.build_dir, manifest, dry_run=dry_run, force=force)
            if not dry_run:
                p.verify(manifest)
        except ReleaseError as e:
            errors.append(e)
            r = PublishResult(p.name, "failed", "", message=str(e).splitlines()[0])
        results.append(r)
        log.info("%s", r.line())
    if errors:
        if len(errors) == len(publishers):
            raise errors[0]
        raise PartialPublishError(
            "some targets failed; run the same command again to finish them:\n"
            + "\n".join(f"  {r.line()}" for r in results)
        )
    return results
