"""A trusted release's files brought into the cache, verified, and the order of variants.

`Release` is a manifest that passed the trust checks (fetching.resolve) and the means to bring its
files into the cache: each model file, in the order of the preferred variants, is the cached copy
when it matches the manifest, else a download from the manifest's source and then the others,
each checked (size, blake3) before it enters the cache; a file that fails is deleted and the next
source is tried. A pickle variant is only handed out when its manifest is authenticated, or comes
from a local directory, or the caller allows unverified manifests (see trust.py); otherwise the
next variant is tried (onnx executes nothing) and, when none is left, the error says how to
configure trust (`Fallback`, the one loop over variants of fetching and loading).
"""

from __future__ import annotations

import dataclasses
import errno
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import blake3

from pipeline import atomic
from pipeline.client.cache import Cache, CacheBusy, link_error
from pipeline.client.errors import CacheError, DiskFull, Unreachable
from pipeline.client.sources import Source
from pipeline.client.trust import HOW_TO_TRUST, Trust, Untrusted
from pipeline.errors import ArtifactNotFound, InputError, IntegrityError, ReleaseError, RemoteError
from pipeline.manifest import FileEntry, Manifest

log = logging.getLogger("pipeline.client")
DEFAULT_VARIANTS = ("quantized", "original")
# A cached file changed after it was verified: what to do about it.
_AGAIN = (
    " (the cached copy changed after it was verified: `release cache verify` lists what is "
    "damaged; the next fetch downloads it again)"
)


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


def kind_of(failures: Sequence[Exception]) -> type[ReleaseError]:
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
            f"{path}: cannot be read ({e.strerror}); refusing to load it{_AGAIN}"
        ) from None
    if len(data) != entry.size:
        raise IntegrityError(
            f"{path}: {len(data) if len(data) <= entry.size else 'more than ' + str(entry.size)} "
            f"bytes, manifest says {entry.size}; refusing to load it{_AGAIN}"
        )
    digest = blake3.blake3(data, max_threads=blake3.blake3.AUTO).hexdigest()
    if digest != entry.blake3:
        raise IntegrityError(
            f"{path}: blake3 {digest[:16]}…, manifest says {entry.blake3[:16]}…; refusing to "
            f"load it{_AGAIN}"
        )
    return data


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
            problem = room(self.cache, self.manifest, variant, where)
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
                f"{self.cache.root}, and the client is offline; fetch it where the network is "
                f"available: `release fetch {self.model} --version {self.version} --variant "
                f"{variant} --cache-dir {self.cache.root}`"
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
        raise kind_of(failures)(
            f"{self.model} {self.version}: no source could provide a verified {entry.name} ({variant}):\n"
            + "\n".join(f"  - {e}" for e in failures)
        )


def has_variant(manifest: Manifest, variant: str) -> bool:
    return any(f.variant == variant for f in manifest.files)


def room(cache: Cache, manifest: Manifest, variant: str, where: str) -> ReleaseError | None:
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


class Fallback:
    """Variants tried in order, the first that works used: why each of the others was not, and
    the error that sums them up when none worked. The one loop of `fetch_release` (fetch) and
    `loading.load_release` (fetch, load, smoke-test); a full or unusable cache stops both."""

    def __init__(self, release: Release):
        self.release = release
        self.failures: list[Exception] = []
        self.reasons: list[str] = []  # "<variant>: <why>", in order

    def failed(self, variant: str, error: Exception, why: str, said: str, detail: str = "") -> None:
        """Record that `variant` is not used (`why`) and log "<variant> variant <said>: ..."."""
        self.failures.append(error)
        self.reasons.append(f"{variant}: {why}")
        log.warning("%s variant %s: %s", variant, said, detail or error)

    def file(self, variant: str, *, why: str = "", said: str) -> FetchResult | None:
        """The variant's verified file (`Release.file`), or None after recording why not.

        Raises:
            CacheError, CacheBusy: the cache itself failed (no variant would do better).
        """
        try:
            return self.release.file(variant)
        except (CacheError, CacheBusy):
            raise
        except ReleaseError as e:
            self.failed(variant, e, f"{why}{e}", said)
            return None

    def error(self, doing: str) -> ReleaseError:
        """The error when no variant could be `doing` ("fetched", "loaded"): each reason listed,
        and how to configure trust when a variant was refused for the lack of it."""
        r = self.release
        return kind_of(self.failures)(
            f"{r.model} {r.version}: no variant could be {doing}:\n"
            + "\n".join(f"  - {s}" for s in self.reasons)
            + trust_hint(self.failures)
        )


def fetch_release(release: Release, variants: Sequence[str]) -> FetchResult:
    """The first of `variants` that can be had from `release`, verified in the cache.

    Raises:
        IntegrityError: only corrupt or untrusted copies could be found (Untrusted: a pickle of
            an unauthenticated remote manifest, with the way to configure trust) (exit 5).
        ArtifactNotFound: the release has none of the variants.
        Unreachable: no source could be reached (exit 6).
        DiskFull: the cache has no room.
    """
    tried = Fallback(release)
    for variant in variants:
        result = tried.file(variant, said="unavailable, trying the next")
        if result is not None:
            return dataclasses.replace(result, skipped=tuple(tried.reasons))
    raise tried.error("fetched")


def trust_hint(failures: Sequence[Exception]) -> str:
    """How to configure trust, when a variant was refused for the lack of it."""
    return f"\n{HOW_TO_TRUST}" if any(isinstance(e, Untrusted) for e in failures) else ""
