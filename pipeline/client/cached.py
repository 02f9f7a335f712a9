"""What the cache may serve, and the floor it sets: cached versions re-checked against trust.

Only a vouched version (its manifest authenticated now, or the very manifest a local directory
source holds now) is state: it sets the rollback floor (`newest_verified`: `latest` never
resolves below the newest version this cache verified) and wins offline. An unauthenticated
manifest from a remote source is a copy of one answer, which anyone on the path could have given:
it is used as such (the default mode's offline cache) and never outranks a vouched one
(`conflict`). Offline (`offline_release`) the newest vouched cached version serves `latest`, then
the newest unauthenticated one; with a model index verified here, the version it names for the
channel (`remembered_release`), never another in its place.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pipeline.client.cache import Cache
from pipeline.client.errors import Unreachable
from pipeline.client.release import Release, has_variant
from pipeline.client.sources import Source
from pipeline.client.trust import Trust, is_local
from pipeline.errors import ArtifactNotFound, ReleaseError
from pipeline.manifest import MANIFEST_NAME

log = logging.getLogger("pipeline.client")


def local_manifests(sources: Sequence[Source], model: str, version: str) -> list[tuple[str, bytes]]:
    """(source name, manifest bytes) of every local directory source holding `version`."""
    found = []
    for source in sources:
        if not is_local(source):
            continue
        try:
            found.append((source.name, source.read_bytes(model, version, MANIFEST_NAME)))
        except (ReleaseError, OSError):
            continue
    return found


@dataclass(frozen=True)
class Cached:
    """A cached version whose manifest passed the trust checks again, and who vouches for it.

    Only a vouched version (authenticated now, or the very manifest a local directory source
    holds now) is state: it sets the rollback floor and wins offline. An unauthenticated
    manifest from a remote source is a copy of one answer, which anyone on the path could
    have given: it is used as such (the default mode's offline cache) and never outranks a
    vouched one. Both facts are re-checked on every read, never recorded.
    """

    cv: Any  # cache.CachedVersion
    authenticated: str | None
    local: bool = False

    @property
    def vouched(self) -> bool:
        return bool(self.authenticated) or self.local


def trusted_cached(
    cache: Cache, model: str, version: str, trust: Trust, sources: Sequence[Source]
) -> Cached | None:
    """The cached version when its manifest passes the trust checks (again), else None; also
    None when it is unauthenticated and a local directory source holds another manifest of
    that version (the operator's store says otherwise)."""
    cv = cache.read_version(model, version)
    if cv is None or cv.manifest is None:
        return None
    if (cv.manifest.model, cv.manifest.version) != (model, version):
        return None
    where = str(cv.directory / MANIFEST_NAME)
    # keyless: the identity is a source's (its release workflow); any configured one may vouch
    candidates = [s for s in sources if s.name.startswith("github:")] if trust.keyless else [None]
    problems: list[str] = []
    for source in candidates:
        try:
            verdict = trust.check(
                cv.manifest_bytes, cv.signature, where, source=source, manifest=cv.manifest
            )
        except ReleaseError as e:
            problems.append(str(e))
            continue
        local = local_manifests(sources, model, version)
        is_copy = any(b == cv.manifest_bytes for _, b in local)
        if verdict is None and local and not is_copy:
            log.warning(
                "cache: %s: not authenticated, and %s holds another manifest of %s %s; not "
                "using the cached one",
                where,
                local[0][0],
                model,
                version,
            )
            return None
        return Cached(cv, verdict, is_copy)
    log.warning("cache: %s; not using it", "; ".join(problems) or f"{where}: no github: source")
    return None


def cached_release(
    found: Cached, cache: Cache, sources: list[Source], offline: bool, trust: Trust
) -> Release:
    cv = found.cv
    return Release(
        cv.model,
        cv.version,
        cv.manifest,
        cv.manifest_bytes,
        cv.signature,
        "cache",
        sources,
        cache,
        offline,
        trust=trust,
        authenticated=found.authenticated,
        local=found.local,
    )


def offline_release(
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
    trusted = [f for v in candidates if (f := trusted_cached(cache, model, v, trust, sources))]
    # what the operator's store or a trust root vouches for first, newest first; then copies of
    # unauthenticated remote answers (the default mode's cache), newest first
    for found in [f for f in trusted if f.vouched] + [f for f in trusted if not f.vouched]:
        v = found.cv.version
        release = cached_release(found, cache, sources, True, trust)
        has = [
            name
            for name in variants
            if has_variant(release.manifest, name)
            and release.refusal(name) is None
            and cache.installed(model, v, release.manifest.variant(name))
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
        return release
    listed = "".join(f"\n  - {e}" for e in failures)
    message = (
        f"{model} {version}: offline ({why}) and no verified copy in the cache {cache.root}; "
        f"pre-fetch it where the network is available, e.g. when building the image: "
        f"`release fetch {model} --version {version} --cache-dir {cache.root}`{listed}"
    )
    raise (Unreachable if failures else ArtifactNotFound)(message)


def newest_verified(
    cache: Cache, model: str, trust: Trust, sources: Sequence[Source]
) -> Cached | None:
    """The rollback floor: the newest cached version of `model` that is vouched for (its
    manifest authenticated, or the one a local directory source holds). An unauthenticated
    remote manifest never raises it: one hostile answer would otherwise hold every later
    start, the operator's own store included, on the attacker's version."""
    for v in cache.versions(model):
        found = trusted_cached(cache, model, v, trust, sources)
        if found is not None and found.vouched:
            return found
    return None


def pinned_note(release: Release, memory: Any) -> Release:
    """An exact version from the cache: the remembered index says whether it is yanked."""
    from pipeline.client import index as idx

    release.yanked = idx.yank_reason(release.model, release.version, memory=memory)
    idx.warn_yanked(release.model, release.version, release.yanked)
    return release


def remembered_release(
    model: str,
    version: str,
    channel: str,
    memory: Any,
    why: str,
    *,
    cache: Cache,
    trust: Trust,
    variants: Sequence[str],
    sources: list[Source],
) -> Release | None:
    """For `latest` when no source can be used (offline, unreachable, replaying): the version
    the index this client verified last names for `channel`, from the cache; None when no index
    was verified here.

    Raises:
        ArtifactNotFound: an index was verified here, and the version it names for `channel` is
            not in the cache (the newest cached version is not served instead: it may be the
            very version the operator rolled back from).
    """
    if version != "latest":
        return None
    known = memory.load(model)
    if known is None:
        return None
    try:
        pick = known.index.pick(channel)
    except ReleaseError as e:
        raise ArtifactNotFound(f"{model} ({why}): the index this client verified: {e}") from None
    found = trusted_cached(cache, model, pick.version, trust, sources)
    release = None if found is None else cached_release(found, cache, sources, True, trust)
    if release is None or not any(
        has_variant(release.manifest, v)
        and release.refusal(v) is None
        and cache.installed(model, pick.version, release.manifest.variant(v))
        for v in variants
    ):
        raise ArtifactNotFound(
            f"{model} ({why}): the index this client verified last (sequence "
            f"{known.index.sequence}) names {pick.version} for channel {channel!r}, and the cache "
            f"{cache.root} has no usable copy of it; not serving another version in its place. "
            f"Fetch it where the network is available: `release fetch {model} --channel {channel}`"
        )
    log.warning(
        "%s (%s): serving %s %s from the cache %s, as the index this client verified last "
        "(sequence %d) names it for channel %r",
        model,
        why,
        model,
        pick.version,
        cache.root,
        known.index.sequence,
        channel,
    )
    return release
