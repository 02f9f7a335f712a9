"""Resolve a release to a trusted manifest, then bring its model files into the cache verified.

The order of work on a server's start:

1. the manifest: from the cache when a pinned version is installed there (no network at all),
   else from the first source that serves one that passes the trust checks (signature or pin);
   `latest` always asks the sources, except offline;
2. each model file, in the order of the preferred variants: the cached copy when it matches
   the manifest, else a download from the manifest's source and then the others, each checked
   (size, blake3) before it enters the cache; a file that fails is deleted and the next source
   is tried;
3. offline (`offline=True`, `RELEASE_OFFLINE=1`, or every source unreachable): the newest
   trusted cached version for `latest`, the cached version otherwise, and a log line saying so.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.client.cache import Cache, CacheBusy
from pipeline.client.network import CacheError, Unreachable
from pipeline.client.sources import Source
from pipeline.client.trust import Trust
from pipeline.errors import (
    ArtifactNotFound,
    InputError,
    IntegrityError,
    ReleaseError,
    RemoteError,
)
from pipeline.manifest import MANIFEST_NAME, SIGNATURE_NAME, FileEntry, Manifest

log = logging.getLogger("pipeline.client")
DEFAULT_VARIANTS = ("quantized", "original")
OFFLINE_ENV = "RELEASE_OFFLINE"
_SAFE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")  # fullmatch: `$` would accept "1.0.0\n"


@dataclass(frozen=True)
class FetchResult:
    """A verified model file in the cache, and where it and its manifest came from."""

    manifest: Manifest
    directory: Path  # <cache>/<model>/<version>
    path: Path  # the variant's model file
    variant: str
    source: str  # where the file came from; "cache" when it was already there
    cache_hit: bool
    manifest_source: str = "cache"
    offline: bool = False
    skipped: tuple[str, ...] = ()  # why preferred variants were not used
    companions: tuple[Path, ...] = ()  # other files the variant needs (e.g. a tokenizer)


def default_variants() -> tuple[str, ...]:
    """The variants to try when none are given, by what is installed (nothing is imported):
    "onnx" first where onnxruntime is and torch is not (no pickle can load there), last where
    both are, absent without onnxruntime."""
    from importlib.util import find_spec

    def installed(name: str) -> bool:
        try:
            return find_spec(name) is not None
        except (ImportError, ValueError):  # a finder that refuses it, a half-removed package
            return False

    if not installed("onnxruntime"):
        return DEFAULT_VARIANTS
    if not installed("torch"):
        return ("onnx", *DEFAULT_VARIANTS)
    return (*DEFAULT_VARIANTS, "onnx")


def offline_from_env(offline: bool | None) -> bool:
    """`offline` when given, else whether $RELEASE_OFFLINE is set to 1/true/yes/on."""
    if offline is not None:
        return offline
    return os.environ.get(OFFLINE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def _check_name(kind: str, value: str) -> str:
    if not isinstance(value, str) or not _SAFE.fullmatch(value) or value in (".", ".."):
        raise InputError(f"{kind}: expected letters, digits, '.', '_', '+' or '-', found {value!r}")
    return value


def _kind_of(failures: Sequence[Exception]) -> type[ReleaseError]:
    """The error that sums up a list of failures: integrity wins, then not-found."""
    if any(isinstance(e, IntegrityError) for e in failures):
        return IntegrityError
    if failures and all(isinstance(e, Unreachable) for e in failures):
        return Unreachable
    if any(isinstance(e, ArtifactNotFound) for e in failures):
        return ArtifactNotFound
    for kind in (RemoteError, InputError):  # e.g. a redirect loop; a malformed manifest
        if failures and all(isinstance(e, kind) for e in failures):
            return kind
    return ReleaseError


@dataclass
class Release:
    """A trusted manifest and the means to bring its files into the cache."""

    model: str
    version: str
    manifest: Manifest
    manifest_bytes: bytes
    signature: bytes | None
    origin: str  # the manifest's source name, or "cache"
    sources: list[Source]  # the origin first
    cache: Cache
    offline: bool = False
    notes: list[str] = field(default_factory=list)

    def file(self, variant: str) -> FetchResult:
        """The variant's verified model file in the cache (and any companion file the variant
        needs, such as a tokenizer), downloading what is missing.

        Raises:
            ArtifactNotFound: the release has no such variant, or no source has the file.
            IntegrityError: every copy found was corrupt (each was deleted).
            Unreachable: no source could be reached (and the file is not cached).
            DiskFull: the cache has no room.
            CacheBusy: another process kept downloading the file for longer than the lock wait.
        """
        entry = self.manifest.variant(variant)
        path, source, hit = self._ensure(entry, variant)
        companions = [
            self._ensure(e, variant)[0]
            for e in self.manifest.files
            if e.variant == variant and e.kind != "model"
        ]
        return FetchResult(
            manifest=self.manifest,
            directory=self.cache.version_dir(self.model, self.version),
            path=path,
            variant=variant,
            source=source,
            cache_hit=hit,
            manifest_source=self.origin,
            offline=self.offline,
            companions=tuple(companions),
        )

    def _ensure(self, entry: FileEntry, variant: str) -> tuple[Path, str, bool]:
        """One file in the cache, verified: (path, where it came from, whether it was cached)."""
        with self.cache.in_use():  # `cache prune` waits until the file is installed
            return self._ensure_in_use(entry, variant)

    def _ensure_in_use(self, entry: FileEntry, variant: str) -> tuple[Path, str, bool]:
        cached = self.cache.installed(self.model, self.version, entry)
        if cached is not None:
            return cached, "cache", True
        if self.offline:
            raise ArtifactNotFound(
                f"{self.model} {self.version}: {entry.name} ({variant}) is not in the cache "
                f"{self.cache.root}, and the client is offline"
            )
        failures: list[Exception] = []
        for source in self.sources:
            where = f"{source.name}: {self.model}/{self.version}"
            try:
                blob, hit = self.cache.ensure_blob(
                    entry,
                    lambda part, s=source: s.download(
                        self.model, self.version, entry.name, part, entry.size
                    ),
                    where,
                )
                path = self.cache.install(
                    self.model, self.version, self.manifest_bytes, self.signature, entry, blob
                )
            except (CacheError, CacheBusy):
                raise
            except ReleaseError as e:
                failures.append(e)
                log.warning("%s: %s (%s) not taken: %s", source.name, entry.name, variant, e)
                continue
            log.info(
                "%s %s: %s (%s, %.1f MB) %s",
                self.model,
                self.version,
                entry.name,
                variant,
                entry.size / 1e6,
                "found in the cache" if hit else f"downloaded from {source.name}",
            )
            return path, "cache" if hit else source.name, hit
        raise _kind_of(failures)(
            f"{self.model} {self.version}: no source could provide a verified {entry.name} ({variant}):\n"
            + "\n".join(f"  - {e}" for e in failures)
        )


def _from_source(
    source: Source, model: str, version: str, trust: Trust
) -> tuple[str, bytes, bytes | None, Manifest]:
    resolved = _check_name("version", source.latest(model) if version == "latest" else version)
    where = f"{source.name}: {model}/{resolved}/{MANIFEST_NAME}"
    manifest_bytes = source.read_bytes(model, resolved, MANIFEST_NAME)
    signature = None
    if trust.wants_signature:
        try:
            signature = source.read_bytes(model, resolved, SIGNATURE_NAME)
        except ArtifactNotFound:
            signature = None  # Trust.check refuses it with a clear message
    trust.check(manifest_bytes, signature, where)
    manifest = Manifest.from_json(manifest_bytes, where)
    if (manifest.model, manifest.version) != (model, resolved):
        raise IntegrityError(
            f"{where}: describes {manifest.model} {manifest.version}, expected {model} {resolved}"
        )
    return resolved, manifest_bytes, signature, manifest


def _trusted_cached(cache: Cache, model: str, version: str, trust: Trust) -> Any:
    """The cached version when its manifest passes the trust checks, else None."""
    cv = cache.read_version(model, version)
    if cv is None or cv.manifest is None:
        return None
    if (cv.manifest.model, cv.manifest.version) != (model, version):
        return None
    try:
        trust.check(cv.manifest_bytes, cv.signature, str(cv.directory / MANIFEST_NAME))
    except IntegrityError as e:
        log.warning("cache: %s; not using it", e)
        return None
    return cv


def _offline_release(
    model: str,
    version: str,
    *,
    cache: Cache,
    trust: Trust,
    variants: Sequence[str],
    sources: list[Source],
    why: str,
    failures: Sequence[Exception] = (),
) -> Release:
    candidates = cache.versions(model) if version == "latest" else [version]
    for v in candidates:
        cv = _trusted_cached(cache, model, v, trust)
        if cv is None:
            continue
        has = [
            name
            for name in variants
            if _has_variant(cv.manifest, name)
            and cache.installed(model, v, cv.manifest.variant(name))
        ]
        if not has:
            continue
        log.warning(
            "offline (%s): using %s %s from the cache %s (%s)",
            why,
            model,
            v,
            cache.root,
            ", ".join(has),
        )
        return Release(
            model, v, cv.manifest, cv.manifest_bytes, cv.signature, "cache", sources, cache, True
        )
    listed = "".join(f"\n  - {e}" for e in failures)
    message = (
        f"{model} {version}: offline ({why}) and no verified copy in the cache {cache.root}; "
        f"pre-fetch it where the network is available, e.g. when building the image: "
        f"`release fetch {model} --version {version} --cache-dir {cache.root}`{listed}"
    )
    raise (Unreachable if failures else ArtifactNotFound)(message)


def _has_variant(manifest: Manifest, variant: str) -> bool:
    return any(f.variant == variant for f in manifest.files)


def resolve(
    model: str,
    version: str = "latest",
    *,
    sources: Sequence[Source],
    trust: Trust | None = None,
    cache: Cache | None = None,
    offline: bool | None = None,
    variants: Sequence[str] = DEFAULT_VARIANTS,
) -> Release:
    """Find the trusted manifest of `model` `version` (see the module docstring).

    Raises:
        InputError: the model or version name is not a plain name.
        IntegrityError: every manifest found failed the trust checks (exit 5).
        ArtifactNotFound: no source has the release, or offline with nothing cached.
        Unreachable: no source could be reached and nothing usable is cached.
    """
    _check_name("model", model)
    if version != "latest":
        _check_name("version", version)
    trust = trust or Trust()
    cache = cache or Cache()
    sources = list(sources)
    if offline_from_env(offline):
        return _offline_release(
            model,
            version,
            cache=cache,
            trust=trust,
            variants=variants,
            sources=sources,
            why="offline mode requested",
        )
    if version != "latest":
        cv = _trusted_cached(cache, model, version, trust)
        if cv is not None:
            log.debug("%s %s: manifest from the cache %s", model, version, cache.root)
            return Release(
                model,
                version,
                cv.manifest,
                cv.manifest_bytes,
                cv.signature,
                "cache",
                sources,
                cache,
            )
    if not sources:
        return _offline_release(
            model,
            version,
            cache=cache,
            trust=trust,
            variants=variants,
            sources=sources,
            why="no source configured",
        )
    failures: list[Exception] = []
    for i, source in enumerate(sources):
        try:
            resolved, manifest_bytes, signature, manifest = _from_source(
                source, model, version, trust
            )
        except (CacheError, CacheBusy):
            raise
        except ReleaseError as e:
            failures.append(e)
            log.warning("%s: no usable manifest: %s", source.name, e)
            continue
        log.info(
            "%s %s: manifest from %s (%s)",
            model,
            resolved,
            source.name,
            trust.describe(),
        )
        ordered = [source, *sources[:i], *sources[i + 1 :]]
        return Release(
            model, resolved, manifest, manifest_bytes, signature, source.name, ordered, cache
        )
    if all(isinstance(e, Unreachable) for e in failures):
        return _offline_release(
            model,
            version,
            cache=cache,
            trust=trust,
            variants=variants,
            sources=sources,
            why="no source can be reached",
            failures=failures,
        )
    raise _kind_of(failures)(
        f"{model} {version}: no source could provide a trusted manifest:\n"
        + "\n".join(f"  - {e}" for e in failures)
    )


def fetch(
    model: str,
    version: str = "latest",
    *,
    sources: Sequence[Source] = (),
    variants: Sequence[str] | None = None,
    public_key: Any = None,
    pin: str | None = None,
    cache_dir: Path | None = None,
    offline: bool | None = None,
    lock_timeout: float | None = None,
) -> FetchResult:
    """Bring the first variant that can be had into the cache, verified; load nothing.

    For an image baked at build time: call it once per variant to have both in the cache.

    Args:
        model, version: the release; version "latest" asks the sources (or, offline, the cache).
        sources: tried in order (see `parse_source`).
        variants: in order of preference; default `default_variants()` (by what is installed).
        public_key: an Ed25519 public key (object, base64 text, PEM, or a path to either);
            the manifest must then carry a valid `manifest.json.sig`.
        pin: the blake3 of the exact manifest.json bytes to accept.
        cache_dir: default `$RELEASE_CACHE_DIR` or the platform cache dir.
        offline: True to use only the cache; None reads `$RELEASE_OFFLINE`.
        lock_timeout: seconds to wait for another process downloading the same file.

    Raises:
        IntegrityError: only corrupt or untrusted copies could be found (exit 5).
        ArtifactNotFound: no source has the release or the variants; offline with nothing cached.
        Unreachable: no source could be reached and nothing usable is cached (exit 6).
        DiskFull: the cache has no room (nothing cached is changed).
    """
    variants = tuple(variants) if variants else default_variants()
    cache = Cache(cache_dir, **({"lock_timeout": lock_timeout} if lock_timeout else {}))
    release = resolve(
        model,
        version,
        sources=sources,
        trust=Trust.from_options(public_key, pin),
        cache=cache,
        offline=offline,
        variants=variants,
    )
    skipped: list[str] = []
    failures: list[Exception] = []
    for variant in variants:
        try:
            result = release.file(variant)
        except (CacheError, CacheBusy):
            raise
        except ReleaseError as e:
            failures.append(e)
            skipped.append(f"{variant}: {e}")
            log.warning("%s variant unavailable, trying the next: %s", variant, e)
            continue
        return dataclasses.replace(result, skipped=tuple(skipped))
    raise _kind_of(failures)(
        f"{model} {release.version}: no variant could be fetched:\n"
        + "\n".join(f"  - {s}" for s in skipped)
    )
