"""Fetch a release's verified files into the cache, trying sources and variants in order."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pipeline import atomic
from pipeline.client.cache import default_cache_dir, ensure_file
from pipeline.client.sources import Source
from pipeline.errors import ArtifactNotFound, IntegrityError, ReleaseError
from pipeline.manifest import MANIFEST_NAME, Manifest

log = logging.getLogger("pipeline.client")
DEFAULT_VARIANTS = ("quantized", "original")


@dataclass(frozen=True)
class FetchResult:
    """Verified files on disk: the manifest, the chosen variant's file and where it came from."""

    manifest: Manifest
    directory: Path
    path: Path  # the chosen variant's model file
    variant: str
    source: str
    cache_hit: bool


def _manifest_from(source: Source, model: str, version: str) -> tuple[str, Manifest]:
    if version == "latest":
        version = source.latest(model)
    manifest = Manifest.from_json(
        source.read_bytes(model, version, MANIFEST_NAME),
        f"{source.name}/{model}/{version}/{MANIFEST_NAME}",
    )
    if (manifest.model, manifest.version) != (model, version):
        raise IntegrityError(
            f"{source.name}: {model}/{version}/{MANIFEST_NAME} describes {manifest.model} {manifest.version}"
        )
    return version, manifest


def fetch(
    model: str,
    version: str = "latest",
    *,
    sources: Sequence[Source],
    variants: Sequence[str] = DEFAULT_VARIANTS,
    cache_dir: Path | None = None,
) -> list[FetchResult]:
    """Verified copies of the release's model files, one per variant that could be had, in order.

    Raises:
        ReleaseError: no source could provide any variant (IntegrityError when only corrupt
            copies were found); the message lists each source's failure.
    """
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    failures: list[str] = []
    for source in sources:
        try:
            resolved, manifest = _manifest_from(source, model, version)
        except ReleaseError as e:
            failures.append(f"{source.name}: {e}")
            log.warning("%s: manifest unavailable: %s", source.name, e)
            continue
        directory = cache_dir / model / resolved
        results = []
        for variant in variants:
            try:
                entry = manifest.variant(variant)
                path, hit = ensure_file(
                    directory,
                    entry,
                    lambda dest, s=source, v=resolved, name=entry.name: s.download(
                        model, v, name, dest
                    ),
                    f"{source.name}/{model}/{resolved}",
                )
            except ReleaseError as e:
                failures.append(f"{source.name} ({variant}): {e}")
                log.warning(
                    "%s: %s variant unavailable, trying the next: %s", source.name, variant, e
                )
                continue
            log.info(
                "%s %s: %s variant %s (%s)",
                model,
                resolved,
                variant,
                "from cache" if hit else "downloaded",
                source.name,
            )
            results.append(FetchResult(manifest, directory, path, variant, source.name, hit))
        if results:
            atomic.write_text(directory / MANIFEST_NAME, manifest.to_json())
            return results
    kind = (
        IntegrityError
        if any("blake3" in f or "bytes, manifest says" in f for f in failures)
        else ArtifactNotFound
    )
    raise kind(
        f"{model} {version}: no source could provide a verified model file:\n"
        + "\n".join(f"  - {f}" for f in failures)
    )
