"""`release publish`: check every target, build if needed, sign, publish; report every target's state.

Order: every target's settings and secrets are checked (and the signing key read) before the
build and before anything is uploaded anywhere; then each target runs, and a failing target
does not stop the others (exit 7 with each target's state). Every target is idempotent, so
running the same command again finishes the failed ones and duplicates nothing.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Iterator
from pathlib import Path

from pipeline import atomic, signing
from pipeline.build import build, current_build
from pipeline.config import PUBLISH_TARGETS as TARGETS
from pipeline.config import ReleaseConfig
from pipeline.errors import (
    ConfigError,
    PartialPublishError,
    ReleaseError,
    RemoteError,
    UsageError,
    bullets,
)
from pipeline.manifest import MANIFEST_NAME, SIGNATURE_NAME, Manifest
from pipeline.publishers.base import Publisher, PublishResult
from pipeline.publishers.local import LocalStore
from pipeline.publishers.remote import RemotePublisher
from pipeline.publishers.settings import PublishSettings
from pipeline.retry import RetryPolicy

log = logging.getLogger("pipeline.publish")


def publishers_for(
    config: ReleaseConfig,
    targets: tuple[str, ...] = (),
    settings: PublishSettings | None = None,
    policy: RetryPolicy | None = None,
) -> list[Publisher]:
    """The publishers for `targets` (default: [publish] targets), in order, without duplicates.

    Raises:
        UsageError: an unknown target.
        ConfigError: a remote target without its [publish.*] repo, or without the publish extra.
    """
    settings = settings or PublishSettings.from_env()
    out: list[Publisher] = []
    for t in dict.fromkeys(targets or config.publish.targets):
        if t == "local":
            out.append(LocalStore(config.publish.local_root))
            continue
        if t not in TARGETS:
            raise UsageError(f"--target {t}: unknown target (available: {', '.join(TARGETS)})")
        target_cfg = config.publish.remote(t)
        target_cfg.require(f"needed by --target {t}", config.path.name)
        try:
            publisher = _remote_publisher(t)
        except ImportError as e:
            extra = "s3" if t == "s3" else "publish"
            raise ConfigError(
                f"--target {t} needs the {extra} extra ({e.name} is not installed): "
                f"pip install 'fastai-release[{extra}]'"
            ) from e
        out.append(publisher(target_cfg, settings, policy=policy, config_name=config.path.name))
    return out


def _remote_publisher(target: str) -> type[RemotePublisher]:
    """The publisher class of a remote target, its client library imported (ImportError: not
    installed, said before anything runs)."""
    if target == "s3":
        import boto3  # noqa: F401  (imported on use by the publisher: check it is there)

        from pipeline.publishers.s3 import S3Publisher

        return S3Publisher
    if target == "github":
        from pipeline.publishers.github import GitHubPublisher

        return GitHubPublisher
    from pipeline.publishers.huggingface import HubPublisher

    return HubPublisher


def check_all(publishers: list[Publisher]) -> None:
    """Every target's settings and secrets, all checked, all problems in one error.

    Raises:
        ReleaseError: the problem of the one target that has one; RemoteError (exit 6) or
            ConfigError listing every problem when several targets have one.
    """
    errors: list[ReleaseError] = []
    for p in publishers:
        try:
            p.check()
        except ReleaseError as e:
            errors.append(e)
    if len(errors) == 1:
        raise errors[0]
    if errors:
        cls = RemoteError if any(isinstance(e, RemoteError) for e in errors) else ConfigError
        raise cls(
            f"{len(errors)} publish targets cannot start (nothing was uploaded):\n"
            + bullets(errors)
        )


def ensure_build(config: ReleaseConfig, *, rebuild: bool = False) -> Manifest:
    """The current build's manifest, building first when there is none for these inputs."""
    manifest = None if rebuild else current_build(config)
    if manifest is not None:
        log.info("using the finished build in %s", config.build_dir)
        return manifest
    log.info("no finished build for these inputs in %s: building first", config.build_dir)
    return build(config)


def signature_for(
    build_dir: Path, manifest: Manifest, signer: signing.Signer | None
) -> bytes | None:
    """The `model.sig` bundle of the build, or None without a signer.

    A bundle already in the build directory that still covers this manifest and was made by the
    same signer is kept (ECDSA and Sigstore signatures differ on every run, and re-running a
    publish must not change a published file); otherwise the build is signed.

    Raises:
        ConfigError: the key or certificate cannot sign.
        RemoteError: keyless signing could not reach Sigstore or had no OIDC token.
    """
    if signer is None:
        return None
    existing = build_dir / SIGNATURE_NAME
    if existing.is_file() and _still_valid(existing.read_bytes(), build_dir, manifest, signer):
        return existing.read_bytes()
    log.info("signing %s %s (%s)", manifest.model, manifest.version, signer.describe())
    return signer.sign(build_dir, manifest)


def _still_valid(
    bundle: bytes, build_dir: Path, manifest: Manifest, signer: signing.Signer
) -> bool:
    """Whether an earlier bundle signs exactly this build, made with this signer's key or
    certificate (keyless: the digests alone; the identity is the CI job's own)."""
    try:
        if signer.method == "sigstore":
            digests = signing.signed_digests_unverified(bundle)
        else:
            digests = signer.trust_root().verify(bundle, str(build_dir / SIGNATURE_NAME))
        manifest_bytes = (build_dir / MANIFEST_NAME).read_bytes()
        signing.check_manifest(digests, manifest_bytes, manifest, str(build_dir / MANIFEST_NAME))
    except (ReleaseError, ValueError, KeyError, TypeError, OSError):
        return False
    return all(signing.sha256_file(build_dir / n) == d for n, d in digests.items())


@contextlib.contextmanager
def _plan_view(build_dir: Path, signature: bytes) -> Iterator[Path]:
    """The build as a publish would see it once signed, without writing into the build."""
    with tempfile.TemporaryDirectory(prefix="release-plan-") as tmp:
        view = Path(tmp)
        for p in build_dir.iterdir():
            if p.is_file() and p.name != SIGNATURE_NAME:
                (view / p.name).symlink_to(p.resolve())
        (view / SIGNATURE_NAME).write_bytes(signature)
        yield view


def publish(
    config: ReleaseConfig,
    targets: tuple[str, ...] = (),
    *,
    dry_run: bool = False,
    force: bool = False,
    settings: PublishSettings | None = None,
    policy: RetryPolicy | None = None,
    publishers: list[Publisher] | None = None,
) -> list[PublishResult]:
    """Publish the current build to every target; each target runs even when another fails.

    Args:
        settings: endpoints and secrets (default: read from the environment now).
        policy: the retry policy for remote targets (default: RetryPolicy()).
        publishers: ready-made publishers instead of `targets` (tests).

    Raises:
        ConfigError, RemoteError: a target's settings or secrets are wrong (before any upload).
        PartialPublishError: some targets finished, others failed (exit 7).
        ReleaseError: the only target, or every target, failed (the first error, listing all).
    """
    settings = settings or PublishSettings.from_env()
    if publishers is None:
        publishers = publishers_for(config, targets, settings, policy)
    signer = settings.signer()  # a bad key is a config problem found before anything else
    check_all(publishers)
    manifest = current_build(config) if dry_run else ensure_build(config)
    if manifest is None:  # a dry run before any build: say what a real publish would do
        log.info(
            "%s: no finished build for the current inputs; a real publish builds first",
            config.build_dir,
        )
        return [
            PublishResult(
                p.name,
                "planned",
                f"{config.model.name} {config.model.version}",
                message="would build first, then publish the build (`release build`, then "
                "`release publish --dry-run`, shows the file-by-file plan)",
            )
            for p in publishers
        ]
    if signer is None and any(p.name != "local" for p in publishers):
        log.warning(
            "publishing without a signature (no %s): servers will refuse this release's pickles "
            "from a remote source unless they pin its manifest; see docs/publishing.md, 'Signing'",
            signing.SIGNING_METHOD_ENV,
        )
    with _signed(config.build_dir, manifest, signer, dry_run=dry_run) as release_dir:
        results = _run(
            publishers,
            release_dir,
            manifest,
            dry_run=dry_run,
            force=force,
            config_name=config.path.name,
        )
    _update_index(publishers, manifest, signer, dry_run=dry_run)
    return results


def _update_index(
    publishers: list[Publisher], manifest: Manifest, signer: signing.Signer | None, *, dry_run: bool
) -> None:
    """Every target published: list the version in each target's model index (pipeline/channels.py).

    Raises:
        PartialPublishError, ReleaseError: a target's index could not be written (run again).
    """
    from pipeline.channels import index_after_publish

    index_after_publish(publishers, manifest.model, manifest.version, signer, dry_run=dry_run)


@contextlib.contextmanager
def _signed(
    build_dir: Path, manifest: Manifest, signer: signing.Signer | None, *, dry_run: bool
) -> Iterator[Path]:
    """The release directory to publish: the build, signed into model.sig when a signer is
    given (a dry run signs into a view of it instead, or, keyless, only says it would sign)."""
    if dry_run and signer is not None and signer.method == "sigstore":
        signature = None  # keyless signing needs the network: a dry run only says it would sign
        log.info("would sign %s %s with %s", manifest.model, manifest.version, signer.describe())
    else:
        signature = signature_for(build_dir, manifest, signer)
    sig_path = build_dir / SIGNATURE_NAME
    current_sig = sig_path.read_bytes() if sig_path.is_file() else None
    if signature is None or signature == current_sig:
        yield build_dir
    elif dry_run:
        with _plan_view(build_dir, signature) as view:
            log.info("would sign the release into %s", SIGNATURE_NAME)
            yield view
    else:
        atomic.write_bytes(sig_path, signature)
        log.info("signed the release: %s", sig_path)
        yield build_dir


def _run(
    publishers: list[Publisher],
    release_dir: Path,
    manifest: Manifest,
    *,
    dry_run: bool,
    force: bool,
    config_name: str = "release.toml",
) -> list[PublishResult]:
    results: list[PublishResult] = []
    errors: list[ReleaseError] = []
    for p in publishers:
        try:
            plan = p.plan(release_dir, manifest, force=force)
            plan.config_name = config_name
            if dry_run:
                r = PublishResult.from_plan(plan)
            else:
                r = p.apply(plan)
                if not r.verified:
                    p.verify(manifest)
        except ReleaseError as e:
            errors.append(e)
            r = PublishResult(p.name, "failed", "", message=str(e).splitlines()[0])
        results.append(r)
        log.debug("%s", r.line())  # the CLI prints each result; the log would say it twice
    if not errors:
        return results
    states = "\n".join(f"  {r.line()}" for r in results)
    if len(errors) < len(publishers):
        raise PartialPublishError(
            f"{len(errors)} of {len(publishers)} targets failed; run the same command again to "
            f"finish them (finished targets are skipped):\n{states}"
        )
    if len(publishers) > 1:
        errors[0].args = (f"{errors[0]}\nevery target failed:\n{states}",)
    raise errors[0]
