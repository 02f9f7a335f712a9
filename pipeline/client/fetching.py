"""Resolve a release to a trusted manifest: the first step of a server's start.

1. the manifest: from the cache when a pinned version is installed there (no network at all),
   else from the first source that serves one that passes the trust checks (signature or pin);
   `latest` always asks the sources, except offline, and never goes back: a source whose
   newest (signed) manifest is older than the newest version this cache already verified is
   refused (rollback), and with a maximum age an old newest manifest too (freeze). "Verified"
   means vouched for, re-checked on every start: authenticated (signature, pin) or the very
   manifest a local directory source holds. An unauthenticated remote manifest is never state:
   it sets no floor, never replaces a vouched one of its version, and a manifest whose files
   cannot fit (a lie about sizes) fails its source or variant, not the fetch;
2. each model file (release.py: `Release.file`, `fetch_release`);
3. offline (`offline=True`, `RELEASE_OFFLINE=1` in the settings, or every source unreachable): the
   newest vouched cached version for `latest` (then, in the default mode, the newest
   unauthenticated one), the cached version otherwise, and a log line saying so (cached.py).

The names users and the loaders import from here before the split (`FetchResult`, `Release`,
`read_verified`, `fetch_release`, `default_variants`...) are re-exported.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pipeline.client.cache import Cache, CacheBusy, default_cache_dir
from pipeline.client.cached import (
    Cached,
    cached_release,
    newest_verified,
    offline_release,
    pinned_note,
    remembered_release,
    trusted_cached,
)
from pipeline.client.errors import CacheError, Unreachable
from pipeline.client.release import (
    DEFAULT_VARIANTS,
    FetchResult,
    NoRoom,
    Release,
    default_variants,
    fetch_release,
    has_variant,
    kind_of,
    read_verified,
    room,
    trust_hint,
)
from pipeline.client.settings import ClientSettings
from pipeline.client.sources import Source
from pipeline.client.trust import Trust, is_local, say_local_once
from pipeline.errors import (
    ArtifactNotFound,
    ConfigError,
    InputError,
    IntegrityError,
    ReleaseError,
)
from pipeline.manifest import MANIFEST_NAME, SIGNATURE_NAME, Manifest
from pipeline.versions import version_key

__all__ = [
    "DEFAULT_VARIANTS",
    "FetchResult",
    "NoRoom",
    "Release",
    "default_variants",
    "fetch_release",
    "read_verified",
    "resolve",
    "trust_hint",
]

log = logging.getLogger("pipeline.client")
_SAFE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")  # fullmatch: `$` would accept "1.0.0\n"


def _check_name(kind: str, value: str) -> str:
    if not isinstance(value, str) or not _SAFE.fullmatch(value) or value in (".", ".."):
        raise InputError(f"{kind}: expected letters, digits, '.', '_', '+' or '-', found {value!r}")
    if kind == "version" and value.lower() == "latest":  # the pointer file's name, not a version
        raise InputError(f"version: {value!r} names the pointer to the newest version, not one")
    return value


@dataclass(frozen=True)
class _Found:
    version: str
    manifest_bytes: bytes
    signature: bytes | None
    manifest: Manifest
    authenticated: str | None


def _from_source(source: Source, model: str, version: str, trust: Trust) -> _Found:
    resolved = _check_name("version", source.latest(model) if version == "latest" else version)
    where = f"{source.name}: {model}/{resolved}/{MANIFEST_NAME}"
    manifest_bytes = source.read_bytes(model, resolved, MANIFEST_NAME)
    signature = None
    if trust.wants_signature:
        try:
            signature = source.read_bytes(model, resolved, SIGNATURE_NAME)
        except ArtifactNotFound:
            signature = None  # Trust.check refuses it with a clear message
    manifest = Manifest.from_json(manifest_bytes, where)
    # The signed manifest, not the pointer, says which release this is.
    if (manifest.model, manifest.version) != (model, resolved):
        raise IntegrityError(
            f"{where}: describes {manifest.model} {manifest.version}, expected {model} {resolved}"
        )
    verdict = trust.check(manifest_bytes, signature, where, source=source, manifest=manifest)
    if verdict is None and is_local(source):
        say_local_once(source.name)
    return _Found(resolved, manifest_bytes, signature, manifest, verdict)


def _nothing_fits(
    found: _Found, source: Source, cache: Cache, trust: Trust, variants: Sequence[str]
) -> ReleaseError | None:
    """For an unauthenticated remote manifest: the error when none of the variants it could
    provide fits in the cache (see release.room), so that resolution moves on to the next source."""
    if found.authenticated or is_local(source):
        return None
    usable = [
        v
        for v in variants
        if has_variant(found.manifest, v) and (v == "onnx" or trust.allow_unverified)
    ]
    where = f"{source.name}: {found.manifest.model}/{found.version}"
    problems = [room(cache, found.manifest, v, where) for v in usable]
    if not problems or any(p is None for p in problems):
        return None
    if all(isinstance(p, InputError) for p in problems):
        return InputError("\n".join(str(p) for p in problems))
    return NoRoom("\n".join(str(p) for p in problems))


def _conflict(
    cache: Cache, found: _Found, source: Source, trust: Trust, sources: Sequence[Source]
) -> str | None:
    """Why an unauthenticated remote manifest may not replace the cached one of its version
    (the cached one is vouched for and differs), or None."""
    if found.authenticated or is_local(source):
        return None
    cached = trusted_cached(cache, found.manifest.model, found.version, trust, sources)
    if cached is None or not cached.vouched or cached.cv.manifest_bytes == found.manifest_bytes:
        return None
    by = cached.authenticated or "the local directory source's copy"
    return (
        f"the cache holds another manifest of {found.manifest.model} {found.version} "
        f"({by}); refusing to replace it with this unauthenticated one"
    )


def resolve(
    model: str,
    version: str = "latest",
    *,
    sources: Sequence[Source],
    trust: Trust | None = None,
    cache: Cache | None = None,
    offline: bool | None = None,
    variants: Sequence[str] = DEFAULT_VARIANTS,
    channel: str = "latest",
    index_identity: str | None = None,
    settings: ClientSettings | None = None,
) -> Release:
    """Find the trusted manifest of `model` `version` (see the module docstring); for
    `version="latest"`, the version `channel` names in the source's model index (see
    client/index.py; without an index, `latest` as before). `offline` None and `cache` None
    take `settings`' (RELEASE_OFFLINE, RELEASE_CACHE_DIR; the environment's when no settings
    are given).

    Raises:
        InputError: the model or version name is not a plain name.
        IntegrityError: every manifest found failed the trust checks, was older than the
            newest version this cache verified (rollback), or too old (freeze) (exit 5); every
            index was replayed, expired or badly signed.
        ArtifactNotFound: no source has the release, or offline with nothing cached.
        Unreachable: no source could be reached and nothing usable is cached.
    """
    from pipeline.client import index as idx

    _check_name("model", model)
    if version != "latest":
        _check_name("version", version)
    trust = trust or Trust()
    if offline is None or cache is None:
        settings = ClientSettings.from_env() if settings is None else settings
        offline = bool(settings.offline) if offline is None else offline
        cache = cache or Cache(default_cache_dir(settings))
    r = _Resolution(model, version, list(sources), trust, cache, tuple(variants), channel)
    r.index_identity, r.memory = index_identity, idx.Memory(cache, trust, index_identity)
    if offline:
        return r.offline("offline mode requested")
    if version != "latest":
        cached = trusted_cached(cache, model, version, trust, r.sources)
        if cached is not None:
            log.debug("%s %s: manifest from the cache %s", model, version, cache.root)
            return pinned_note(cached_release(cached, cache, r.sources, False, trust), r.memory)
    if not r.sources:
        return offline_release(model, version, why="no source configured", **r.cached_args)
    return r.from_sources()


class _RolledBack(IntegrityError):
    """A source's `latest` is older than the newest version this cache verified."""


@dataclass
class _Resolution:
    """One `resolve` call: what it asks for, and the steps that answer it."""

    model: str
    version: str
    sources: list[Source]
    trust: Trust
    cache: Cache
    variants: tuple[str, ...]
    channel: str
    index_identity: str | None = None
    memory: Any = None  # client/index.Memory: the index this cache verified last
    failures: list[Exception] = field(default_factory=list)

    @property
    def cached_args(self) -> dict[str, Any]:
        return {
            "cache": self.cache,
            "trust": self.trust,
            "variants": self.variants,
            "sources": self.sources,
        }

    def offline(self, why: str) -> Release:
        """No source asked: the version the remembered index names, else the cache's best."""
        remembered = remembered_release(
            self.model, self.version, self.channel, self.memory, why, **self.cached_args
        )
        if remembered is not None:
            return remembered
        release = offline_release(self.model, self.version, why=why, **self.cached_args)
        return release if self.version == "latest" else pinned_note(release, self.memory)

    def from_sources(self) -> Release:
        """The first source's usable answer, in order; else what the cache may serve.

        Raises:
            CacheError, CacheBusy, ConfigError: at once (every source would meet them).
        """
        latest = self.version == "latest"
        floor = (
            newest_verified(self.cache, self.model, self.trust, self.sources) if latest else None
        )
        for i, source in enumerate(self.sources):
            try:
                return self._answer(i, source, floor)
            except (CacheError, CacheBusy, ConfigError):
                raise
            except ReleaseError as e:
                self.failures.append(e)
                log.warning("%s: no usable manifest: %s", source.name, e)
        return self._none_usable(floor)

    def _answer(self, i: int, source: Source, floor: Cached | None) -> Release:
        """`source`'s trusted manifest of the version asked (or its index names).

        Raises:
            ReleaseError: the source cannot give a usable one (the next is tried).
        """
        from pipeline.client import index as idx

        choice = None
        if self.version == "latest":
            choice = idx.choose(
                source,
                self.model,
                self.channel,
                trust=self.trust,
                memory=self.memory,
                index_identity=self.index_identity,
            )
            if choice is None and self.channel != "latest":
                raise ArtifactNotFound(
                    f"{source.name}: no model index of {self.model}, so no channel "
                    f"{self.channel!r}; `release promote` writes one"
                )
        found = _from_source(
            source, self.model, choice.version if choice else self.version, self.trust
        )
        self._check_answer(source, found, choice, floor)
        log.info(
            "%s %s: manifest from %s (%s)",
            self.model,
            found.version,
            source.name,
            found.authenticated or "not authenticated",
        )
        ordered = [source, *self.sources[:i], *self.sources[i + 1 :]]
        release = Release(
            self.model,
            found.version,
            found.manifest,
            found.manifest_bytes,
            found.signature,
            source.name,
            ordered,
            self.cache,
            trust=self.trust,
            authenticated=found.authenticated,
            local=is_local(source),
            choice=choice,
        )
        if self.version != "latest":
            release.yanked = idx.yank_reason(
                self.model,
                self.version,
                memory=self.memory,
                source=source,
                trust=self.trust,
                index_identity=self.index_identity,
            )
            idx.warn_yanked(self.model, self.version, release.yanked)
        return release

    def _check_answer(
        self, source: Source, found: _Found, choice: Any, floor: Cached | None
    ) -> None:
        """Refuse a rollback, a frozen `latest`, a conflict with the cache, a release that
        cannot fit.

        Raises:
            IntegrityError, InputError, NoRoom: the answer is not usable (the next source is tried).
        """
        where = f"{source.name}: {self.model}/{found.version}/{MANIFEST_NAME}"
        # a version a verified index (or the operator's own directory) names may be lower
        # than the cache's newest: that is an operator's rollback, the index's sequence is
        # what never goes back
        if (
            floor is not None
            and not (choice is not None and choice.trusted)
            and version_key(found.manifest.version) < version_key(floor.cv.version)
        ):
            raise _RolledBack(
                f"{where}: 'latest' is {found.manifest.version}, older than {floor.cv.version}, "
                f"which this cache already verified: refusing to roll back (pin "
                f"--version {found.manifest.version} to go back on purpose)"
            )
        if self.version == "latest" and choice is None:  # an index's own age was checked
            self.trust.check_age(found.manifest, where)
        if conflict := _conflict(self.cache, found, source, self.trust, self.sources):
            raise IntegrityError(f"{where}: {conflict}")
        if (
            short := _nothing_fits(found, source, self.cache, self.trust, self.variants)
        ) is not None:
            raise short

    def _none_usable(self, floor: Cached | None) -> Release:
        """No source gave a usable answer: the remembered index's version, the floor when the
        sources only rolled back, the cache when none could be reached; else the sum of the
        failures.

        Raises:
            ReleaseError: the kind the failures share, each listed.
        """
        failures, model, version = self.failures, self.model, self.version
        listed = "\n".join(f"  - {f}" for f in failures)
        if version == "latest":
            why = "no source offers an index or release this client can accept"
            try:
                remembered = remembered_release(
                    model, version, self.channel, self.memory, why, **self.cached_args
                )
            except ArtifactNotFound as e:
                raise kind_of(failures)(f"{e}:\n{listed}") from None
            if remembered is not None:
                remembered.notes = [str(e).splitlines()[0] for e in failures]
                return remembered
        if floor is not None and any(isinstance(e, _RolledBack) for e in failures):
            release = cached_release(floor, self.cache, self.sources, False, self.trust)
            if any(
                release.refusal(v) is None and has_variant(release.manifest, v)
                for v in self.variants
            ):
                log.warning(
                    "%s: no source offers a version at least as new as %s, which this cache "
                    "verified; keeping %s",
                    model,
                    floor.cv.version,
                    floor.cv.version,
                )
                return release
        if all(isinstance(e, Unreachable) for e in failures):
            return offline_release(
                model,
                version,
                why="no source can be reached",
                failures=failures,
                **self.cached_args,
            )
        missing = bool(failures) and all(isinstance(e, ArtifactNotFound) for e in failures)
        hint = (
            f"\ncheck the model name and version: `release list {model} --source SOURCE` shows "
            "what a source offers"
            if missing
            else ""
        )
        raise kind_of(failures)(
            f"{model} {version}: no source could provide a trusted manifest:\n{listed}{hint}"
        )
