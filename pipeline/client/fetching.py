"""Resolve a release to a trusted manifest, then bring its model files into the cache verified.

The order of work on a server's start:

1. the manifest: from the cache when a pinned version is installed there (no network at all),
   else from the first source that serves one that passes the trust checks (signature or pin);
   `latest` always asks the sources, except offline, and never goes back: a source whose
   newest (signed) manifest is older than the newest version this cache already verified is
   refused (rollback), and with a maximum age an old newest manifest too (freeze). "Verified"
   means vouched for, re-checked on every start: authenticated (signature, pin) or the very
   manifest a local directory source holds. An unauthenticated remote manifest is never state:
   it sets no floor, never replaces a vouched one of its version, and a manifest whose files
   cannot fit (a lie about sizes) fails its source or variant, not the fetch;
2. each model file, in the order of the preferred variants: the cached copy when it matches
   the manifest, else a download from the manifest's source and then the others, each checked
   (size, blake3) before it enters the cache; a file that fails is deleted and the next source
   is tried;
3. offline (`offline=True`, `RELEASE_OFFLINE=1` in the settings, or every source unreachable): the newest
   vouched cached version for `latest` (then, in the default mode, the newest unauthenticated
   one), the cached version otherwise, and a log line saying so.

A pickle variant is only handed out when its manifest is authenticated, or comes from a local
directory, or the caller allows unverified manifests (see trust.py); otherwise the next variant
is tried (onnx executes nothing) and, when none is left, the error says how to configure trust.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import blake3

from pipeline import atomic
from pipeline.client.cache import Cache, CacheBusy, default_cache_dir, link_error
from pipeline.client.errors import CacheError, DiskFull, Unreachable
from pipeline.client.settings import ClientSettings
from pipeline.client.sources import Source
from pipeline.client.trust import HOW_TO_TRUST, Trust, Untrusted, is_local, say_local_once
from pipeline.errors import (
    ArtifactNotFound,
    ConfigError,
    InputError,
    IntegrityError,
    ReleaseError,
    RemoteError,
)
from pipeline.manifest import MANIFEST_NAME, SIGNATURE_NAME, FileEntry, Manifest

log = logging.getLogger("pipeline.client")
DEFAULT_VARIANTS = ("quantized", "original")
_SAFE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")  # fullmatch: `$` would accept "1.0.0\n"


class NoRoom(ReleaseError):
    """An unauthenticated remote manifest declares a file larger than the cache's free space:
    that source (or variant) fails and the next is tried (not a CacheError, which stops the
    fetch); when every one failed so, the summary is a DiskFull."""

    exit_code = 3


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
    authenticated: str | None = None  # how the manifest was authenticated; None: it was not
    local: bool = False  # the manifest is the one in a local directory source

    @property
    def unverified(self) -> bool:
        """A pickle variant whose manifest nobody vouched for (loaded only when allowed)."""
        return self.variant != "onnx" and not self.authenticated and not self.local


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


def _check_name(kind: str, value: str) -> str:
    if not isinstance(value, str) or not _SAFE.fullmatch(value) or value in (".", ".."):
        raise InputError(f"{kind}: expected letters, digits, '.', '_', '+' or '-', found {value!r}")
    if kind == "version" and value.lower() == "latest":  # the pointer file's name, not a version
        raise InputError(f"version: {value!r} names the pointer to the newest version, not one")
    return value


def _kind_of(failures: Sequence[Exception]) -> type[ReleaseError]:
    """The error that sums up a list of failures: integrity wins, then not-found."""
    integrity = [e for e in failures if isinstance(e, IntegrityError)]
    if integrity:
        return Untrusted if all(isinstance(e, Untrusted) for e in integrity) else IntegrityError
    if failures and all(isinstance(e, Unreachable) for e in failures):
        return Unreachable
    if any(isinstance(e, ArtifactNotFound) for e in failures):
        return ArtifactNotFound
    if failures and all(isinstance(e, NoRoom) for e in failures):
        return DiskFull
    for kind in (RemoteError, InputError):  # e.g. a redirect loop; a malformed manifest
        if failures and all(isinstance(e, kind) for e in failures):
            return kind
    return ReleaseError


def read_verified(path: Path, entry: FileEntry) -> bytes:
    """The file's bytes, read once and checked (size, blake3) against its manifest entry.

    Load from these bytes, never from `path` again: a process that can write the cache could
    otherwise swap the file between the check and the load.

    Raises:
        IntegrityError: the file is missing, unreadable, or differs from the manifest.
    """
    try:
        with atomic.open_nofollow(path) as f:  # a link planted in the cache is not followed
            data = f.read(entry.size + 1)  # one byte more shows a longer file
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise link_error(Path(e.filename or path), f"{path}: loading") from None
        raise IntegrityError(
            f"{path}: cannot be read ({e.strerror}); refusing to load it"
        ) from None
    if len(data) != entry.size:
        raise IntegrityError(
            f"{path}: {len(data) if len(data) <= entry.size else 'more than ' + str(entry.size)} "
            f"bytes, manifest says {entry.size}; refusing to load it"
        )
    digest = blake3.blake3(data, max_threads=blake3.blake3.AUTO).hexdigest()
    if digest != entry.blake3:
        raise IntegrityError(
            f"{path}: blake3 {digest[:16]}…, manifest says {entry.blake3[:16]}…; refusing to load it"
        )
    return data


def version_key(v: str) -> tuple:
    """Order versions as PEP 440 does (1.10.0 after 1.9.0); names that are not versions first."""
    from packaging.version import InvalidVersion, Version

    try:
        return (1, Version(v), v)
    except InvalidVersion:
        return (0, v, v)


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
    trust: Trust = field(default_factory=Trust)
    authenticated: str | None = None  # how the manifest was authenticated (trust.check)
    local: bool = False  # the manifest is the one in a local directory source
    choice: Any = None  # the index's answer for the channel (client/index.Choice), if any
    yanked: str | None = None  # why this version is yanked (an exact pin of it), if it is

    def refusal(self, variant: str) -> Untrusted | None:
        """Why `variant` may not be used with this manifest, or None (see trust.py)."""
        if variant == "onnx" or self.authenticated or self.local or self.trust.allow_unverified:
            return None
        return Untrusted(
            f"refusing the {variant} variant, a pickle that runs code when loaded, from "
            f"{self.origin}: its manifest is not authenticated (trust: {self.trust.describe()})"
        )

    def file(self, variant: str) -> FetchResult:
        """The variant's verified model file in the cache (and any companion file the variant
        needs, such as a tokenizer), downloading what is missing.

        Raises:
            Untrusted: a pickle variant of an unauthenticated remote manifest (exit 5).
            ArtifactNotFound: the release has no such variant, or no source has the file.
            IntegrityError: every copy found was corrupt (each was deleted).
            Unreachable: no source could be reached (and the file is not cached).
            DiskFull: the cache has no room.
            CacheBusy: another process kept downloading the file for longer than the lock wait.
        """
        refused = self.refusal(variant)
        if refused is not None:
            raise refused
        entry = self.manifest.variant(variant)
        if not (self.authenticated or self.local) and not self.offline:
            where = f"{self.origin}: {self.model}/{self.version}"
            problem = _room(self.cache, self.manifest, variant, where)
            if problem is not None:  # a lie or a real shortfall: this variant fails, not all
                raise problem
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
            authenticated=self.authenticated,
            local=self.local,
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


def _local_manifests(
    sources: Sequence[Source], model: str, version: str
) -> list[tuple[str, bytes]]:
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
class _Cached:
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


def _trusted_cached(
    cache: Cache, model: str, version: str, trust: Trust, sources: Sequence[Source]
) -> _Cached | None:
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
        local = _local_manifests(sources, model, version)
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
        return _Cached(cv, verdict, is_copy)
    log.warning("cache: %s; not using it", "; ".join(problems) or f"{where}: no github: source")
    return None


def _cached_release(
    found: _Cached, cache: Cache, sources: list[Source], offline: bool, trust: Trust
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
    trusted = [f for v in candidates if (f := _trusted_cached(cache, model, v, trust, sources))]
    # what the operator's store or a trust root vouches for first, newest first; then copies of
    # unauthenticated remote answers (the default mode's cache), newest first
    for found in [f for f in trusted if f.vouched] + [f for f in trusted if not f.vouched]:
        v = found.cv.version
        release = _cached_release(found, cache, sources, True, trust)
        has = [
            name
            for name in variants
            if _has_variant(release.manifest, name)
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


def _has_variant(manifest: Manifest, variant: str) -> bool:
    return any(f.variant == variant for f in manifest.files)


def _room(cache: Cache, manifest: Manifest, variant: str, where: str) -> ReleaseError | None:
    """For an unauthenticated remote manifest: why a file of `variant` cannot enter the cache
    (InputError: it declares more than the whole disk; NoRoom: more than the free space), or
    None. Such a manifest may lie about sizes: the caller fails its source or variant instead
    of the whole fetch (an authenticated manifest's shortfall is the cache's DiskFull)."""
    for entry in manifest.files:
        if entry.variant != variant:
            continue
        found = cache.no_room(entry)
        if found is None:
            continue
        impossible, why = found
        if impossible:
            return InputError(f"{where}/{entry.name} ({variant}): {why}; not downloading it")
        return NoRoom(
            f"{where}/{entry.name} ({variant}): {why}; nothing was downloaded and the cache is unchanged: "
            "free space (`release cache prune`), or point RELEASE_CACHE_DIR / --cache-dir at a "
            "larger disk"
        )
    return None


def _nothing_fits(
    found: _Found, source: Source, cache: Cache, trust: Trust, variants: Sequence[str]
) -> ReleaseError | None:
    """For an unauthenticated remote manifest: the error when none of the variants it could
    provide fits in the cache (see _room), so that resolution moves on to the next source."""
    if found.authenticated or is_local(source):
        return None
    usable = [
        v
        for v in variants
        if _has_variant(found.manifest, v) and (v == "onnx" or trust.allow_unverified)
    ]
    where = f"{source.name}: {found.manifest.model}/{found.version}"
    problems = [_room(cache, found.manifest, v, where) for v in usable]
    if not problems or any(p is None for p in problems):
        return None
    if all(isinstance(p, InputError) for p in problems):
        return InputError("\n".join(str(p) for p in problems))
    return NoRoom("\n".join(str(p) for p in problems))


def _newest_verified(
    cache: Cache, model: str, trust: Trust, sources: Sequence[Source]
) -> _Cached | None:
    """The rollback floor: the newest cached version of `model` that is vouched for (its
    manifest authenticated, or the one a local directory source holds). An unauthenticated
    remote manifest never raises it: one hostile answer would otherwise hold every later
    start, the operator's own store included, on the attacker's version."""
    for v in cache.versions(model):
        found = _trusted_cached(cache, model, v, trust, sources)
        if found is not None and found.vouched:
            return found
    return None


def _conflict(
    cache: Cache, found: _Found, source: Source, trust: Trust, sources: Sequence[Source]
) -> str | None:
    """Why an unauthenticated remote manifest may not replace the cached one of its version
    (the cached one is vouched for and differs), or None."""
    if found.authenticated or is_local(source):
        return None
    cached = _trusted_cached(cache, found.manifest.model, found.version, trust, sources)
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
    sources = list(sources)
    memory = idx.Memory(cache, trust, index_identity)
    offline_args = {"cache": cache, "trust": trust, "variants": variants, "sources": sources}
    if offline:
        remembered = _remembered_release(
            model, version, channel, memory, "offline mode requested", **offline_args
        )
        if remembered is not None:
            return remembered
        release = _offline_release(model, version, why="offline mode requested", **offline_args)
        return release if version == "latest" else _pinned_note(release, memory)
    if version != "latest":
        cached = _trusted_cached(cache, model, version, trust, sources)
        if cached is not None:
            log.debug("%s %s: manifest from the cache %s", model, version, cache.root)
            return _pinned_note(_cached_release(cached, cache, sources, False, trust), memory)
    if not sources:
        return _offline_release(model, version, why="no source configured", **offline_args)
    floor = _newest_verified(cache, model, trust, sources) if version == "latest" else None
    failures: list[Exception] = []
    rolled_back = False
    for i, source in enumerate(sources):
        choice = None
        try:
            if version == "latest":
                choice = idx.choose(
                    source,
                    model,
                    channel,
                    trust=trust,
                    memory=memory,
                    index_identity=index_identity,
                )
                if choice is None and channel != "latest":
                    raise ArtifactNotFound(
                        f"{source.name}: no model index of {model}, so no channel {channel!r}; "
                        "`release promote` writes one"
                    )
            found = _from_source(source, model, choice.version if choice else version, trust)
            where = f"{source.name}: {model}/{found.version}/{MANIFEST_NAME}"
            # a version a verified index (or the operator's own directory) names may be lower
            # than the cache's newest: that is an operator's rollback, the index's sequence is
            # what never goes back
            if (
                floor is not None
                and not (choice is not None and choice.trusted)
                and version_key(found.manifest.version) < version_key(floor.cv.version)
            ):
                rolled_back = True
                raise IntegrityError(
                    f"{where}: 'latest' is {found.manifest.version}, older than {floor.cv.version}, "
                    f"which this cache already verified: refusing to roll back (pin "
                    f"--version {found.manifest.version} to go back on purpose)"
                )
            if version == "latest" and choice is None:  # an index's own age was checked
                trust.check_age(found.manifest, where)
            if conflict := _conflict(cache, found, source, trust, sources):
                raise IntegrityError(f"{where}: {conflict}")
            if (short := _nothing_fits(found, source, cache, trust, variants)) is not None:
                raise short
        except (CacheError, CacheBusy, ConfigError):
            raise
        except ReleaseError as e:
            failures.append(e)
            log.warning("%s: no usable manifest: %s", source.name, e)
            continue
        log.info(
            "%s %s: manifest from %s (%s)",
            model,
            found.version,
            source.name,
            found.authenticated or "not authenticated",
        )
        ordered = [source, *sources[:i], *sources[i + 1 :]]
        release = Release(
            model,
            found.version,
            found.manifest,
            found.manifest_bytes,
            found.signature,
            source.name,
            ordered,
            cache,
            trust=trust,
            authenticated=found.authenticated,
            local=is_local(source),
            choice=choice,
        )
        if version != "latest":
            release.yanked = idx.yank_reason(
                model,
                version,
                memory=memory,
                source=source,
                trust=trust,
                index_identity=index_identity,
            )
            idx.warn_yanked(model, version, release.yanked)
        return release
    if version == "latest":
        why = "no source offers an index or release this client can accept"
        try:
            remembered = _remembered_release(model, version, channel, memory, why, **offline_args)
        except ArtifactNotFound as e:
            raise _kind_of(failures)(f"{e}:\n" + "\n".join(f"  - {f}" for f in failures)) from None
        if remembered is not None:
            remembered.notes = [str(e).splitlines()[0] for e in failures]
            return remembered
    if rolled_back and floor is not None:
        release = _cached_release(floor, cache, sources, False, trust)
        if any(release.refusal(v) is None and _has_variant(release.manifest, v) for v in variants):
            log.warning(
                "%s: no source offers a version at least as new as %s, which this cache verified; "
                "keeping %s",
                model,
                floor.cv.version,
                floor.cv.version,
            )
            return release
    if all(isinstance(e, Unreachable) for e in failures):
        return _offline_release(
            model, version, why="no source can be reached", failures=failures, **offline_args
        )
    raise _kind_of(failures)(
        f"{model} {version}: no source could provide a trusted manifest:\n"
        + "\n".join(f"  - {e}" for e in failures)
    )


def _pinned_note(release: Release, memory: Any) -> Release:
    """An exact version from the cache: the remembered index says whether it is yanked."""
    from pipeline.client import index as idx

    release.yanked = idx.yank_reason(release.model, release.version, memory=memory)
    idx.warn_yanked(release.model, release.version, release.yanked)
    return release


def _remembered_release(
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
    found = _trusted_cached(cache, model, pick.version, trust, sources)
    release = None if found is None else _cached_release(found, cache, sources, True, trust)
    if release is None or not any(
        _has_variant(release.manifest, v)
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


def fetch_release(release: Release, variants: Sequence[str]) -> FetchResult:
    """The first of `variants` that can be had from `release`, verified in the cache.

    Raises:
        IntegrityError: only corrupt or untrusted copies could be found (Untrusted: a pickle of
            an unauthenticated remote manifest, with the way to configure trust) (exit 5).
        ArtifactNotFound: the release has none of the variants.
        Unreachable: no source could be reached (exit 6).
        DiskFull: the cache has no room.
    """
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
        f"{release.model} {release.version}: no variant could be fetched:\n"
        + "\n".join(f"  - {s}" for s in skipped)
        + trust_hint(failures)
    )


def trust_hint(failures: Sequence[Exception]) -> str:
    """How to configure trust, when a variant was refused for the lack of it."""
    return f"\n{HOW_TO_TRUST}" if any(isinstance(e, Untrusted) for e in failures) else ""
