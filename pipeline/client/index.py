"""The client's rules for a model's index (`pipeline/index.py`): channels, yanks, replay, freeze.

- Where it is: `<base>/<model>/index.json` on a directory, a mirror or an S3 bucket; the asset
  `index.json` of the release `<model>-index` on GitHub; `index.json` on the branch `index` of
  an HF repository. `read_index` reads it with a conditional request where the host supports it
  (ETag / If-None-Match, else Last-Modified / If-Modified-Since; S3's IfNoneMatch; a file's
  stat; the HF Hub's own ETag check), so an idle poll costs one small request answered 304.
- With a trust root, an index must be signed by it (the same root as `model.sig`; a Sigstore
  root needs the identity that signs indexes, `index_identity`, or the index is not used at
  all). A verified index is remembered in the cache (`<cache>/<model>/.index.json`, the
  envelope itself, verified again whenever it is read), and an index with a lower sequence
  than the remembered one is refused as a replay; one with the same sequence and other content
  too (two documents under one number). The version a channel names may go down (an operator's
  rollback): the anti-rollback floor of `latest` does not apply to a version a verified index
  (or the operator's own local directory) names; the sequence is what only goes up.
- A channel skips yanked versions (downwards, PEP 592); an exact pin of a yanked version is
  served with a warning that carries the reason.
- An index past its `expires`, or, when a maximum age is set, issued longer ago than that, is
  refused (a frozen source).
- Without a trust root an index is read like `latest`: hostile input, bounded, used for this
  process only; nothing from it is remembered, and the version it names is held to the same
  floor as `latest` (the floor a cache of verified manifests sets).
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from pipeline import atomic
from pipeline.client.errors import Unreachable
from pipeline.client.sources import GitHubSource, HfSource, LocalSource, MirrorSource, Source
from pipeline.errors import ArtifactNotFound, InputError, IntegrityError, ReleaseError, RemoteError
from pipeline.index import (
    INDEX_NAME,
    MAX_INDEX_BYTES,
    Envelope,
    Index,
    now_utc,
    parse,
    verify,
)

log = logging.getLogger("pipeline.client")
MEMORY_NAME = ".index.json"  # in <cache>/<model>/: a dot name is never a version directory
GITHUB_INDEX_TAG = "{model}-index"
HF_INDEX_REVISION = "index"


# -- reading, conditionally -------------------------------------------------------------------


@dataclass
class Validator:
    """What a source said about the copy of a file this client read last (for the next poll)."""

    etag: str | None = None
    last_modified: str | None = None
    stamp: tuple[int, int, int] | None = None  # a local file's (mtime_ns, size, inode)
    data: bytes | None = None  # the bytes read last (sources that cannot answer 304)


@dataclass(frozen=True)
class Read:
    """A conditional read: `data` None means "not modified since `validator`"."""

    data: bytes | None
    validator: Validator

    @property
    def changed(self) -> bool:
        return self.data is not None


def _local(source: LocalSource, model: str, name: str, v: Validator) -> Read:
    path = Path(source.root) / model / name
    try:
        st = path.stat()
    except FileNotFoundError:
        raise ArtifactNotFound(f"{source.name}: no {model}/{name}") from None
    except OSError as e:
        raise RemoteError(f"{source.name}: cannot read {model}/{name}: {e}") from None
    stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
    if v.stamp == stamp:
        return Read(None, v)
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_INDEX_BYTES + 1)
    except OSError as e:
        raise RemoteError(f"{source.name}: cannot read {model}/{name}: {e}") from None
    return Read(data, Validator(stamp=stamp))


def _http(source: Any, url: str, what: str, v: Validator, headers: Any = None) -> Read:
    """A conditional read through the source's Http (its bounds, deadline and redirect hosts)."""
    data, etag, modified = source.http.get_if_changed(
        url,
        what=what,
        etag=v.etag,
        last_modified=None if v.etag else v.last_modified,
        headers=headers,
        limit=MAX_INDEX_BYTES,
        source=source.name,
        redirect_hosts=getattr(source, "redirect_hosts", ()),
    )
    if data is None:
        return Read(None, v)
    return Read(data, Validator(etag=etag, last_modified=modified))


def _s3(source: Any, model: str, name: str, v: Validator) -> Read:
    from botocore import exceptions as bx

    key = source.key(model, name)
    what = f"{source.name}: {model}/{name}"
    extra = {"IfNoneMatch": v.etag} if v.etag else {}
    try:
        obj = source.client.get_object(Bucket=source.bucket, Key=key, **extra)
    except bx.ClientError as e:
        status = (e.response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
        code = (e.response.get("Error") or {}).get("Code", "")
        if status == 304 or code in ("304", "NotModified"):
            return Read(None, v)
        if status == 404 or code in ("NoSuchKey", "404", "NoSuchBucket", "NotFound"):
            raise ArtifactNotFound(f"{what}: not found ({code or status})") from None
        if status is not None and (status >= 500 or status == 429):
            raise Unreachable(f"{what}: HTTP {status} {code}") from None
        raise RemoteError(f"{what}: HTTP {status} {code}") from None
    except (bx.BotoCoreError, ConnectionError, TimeoutError) as e:
        raise Unreachable(f"{what}: {type(e).__name__}: {e}") from None
    body = bytearray()
    try:
        for chunk in obj["Body"].iter_chunks(1 << 16):
            body += chunk
            if len(body) > MAX_INDEX_BYTES:
                raise RemoteError(f"{what}: more than {MAX_INDEX_BYTES} bytes: not an index")
    except (bx.BotoCoreError, ConnectionError, TimeoutError) as e:
        raise Unreachable(f"{what}: {type(e).__name__}: {e}") from None
    return Read(bytes(body), Validator(etag=obj.get("ETag")))


def _github(source: GitHubSource, model: str, v: Validator) -> Read:
    from urllib.parse import quote

    tag = GITHUB_INDEX_TAG.format(model=model)
    what = f"{source.name}: release {tag}: {INDEX_NAME}"
    if not source.token:  # the public download URL: no API call, no API rate limit
        return _http(source, source.download_url(tag, INDEX_NAME), what, v)
    # with a token (a private repository): the release through the API, answered 304 while
    # its assets are unchanged (a 304 does not count against GitHub's rate limit)
    api = f"{source.api_url}/repos/{source.repo}/releases/tags/{quote(tag, safe='')}"
    read = _http(source, api, f"{source.name}: release {tag}", v, source._api_headers())
    if read.data is None:
        return read
    try:
        release = json.loads(read.data)
    except (ValueError, RecursionError):
        raise ArtifactNotFound(f"{what}: the release answer is not JSON") from None
    url, headers = source.asset_in(release, tag, INDEX_NAME)  # the token to the API only
    data = source.http.get_bytes(
        url,
        what=what,
        headers=headers,
        limit=MAX_INDEX_BYTES,
        source=source.name,
        redirect_hosts=source.redirect_hosts,
    )
    return Read(data, read.validator)


def _hf(source: HfSource, v: Validator) -> Read:
    """The index on the Hub's `index` branch, through the source's Http (If-None-Match)."""
    what = f"{source.name}@{HF_INDEX_REVISION}: {INDEX_NAME}"
    url = source.file_url(INDEX_NAME, HF_INDEX_REVISION)
    return source.explained(what, lambda: _http(source, url, what, v, source.headers()))


def read_index(
    source: Source,
    model: str,
    validator: Validator | None = None,
    *,
    name: str = INDEX_NAME,
) -> Read:
    """The source's `index.json` of `model` (or, with `name="latest"`, its `latest` pointer,
    on sources with the store layout), unless unchanged since `validator`.

    Raises:
        ArtifactNotFound: the source has no index of `model` (or cannot hold one).
        Unreachable, RemoteError: the source failed.
    """
    v = validator or Validator()
    if isinstance(source, LocalSource):
        return _local(source, model, name, v)
    if isinstance(source, MirrorSource):
        what = f"{source.name}: {model}/{name}"
        return _http(source, source._url(model, name), what, v, source.headers)
    if type(source).__name__ == "S3Source":
        return _s3(source, model, name, v)
    if name != INDEX_NAME:
        raise ArtifactNotFound(f"{source.name}: has no {name} pointer to poll")
    if isinstance(source, GitHubSource):
        return _github(source, model, v)
    if isinstance(source, HfSource):
        return _hf(source, v)
    reader = getattr(source, "read_index", None)  # a custom source may offer one
    if reader is None:
        raise ArtifactNotFound(f"{getattr(source, 'name', source)}: keeps no model index")
    data = reader(model)
    return Read(data, Validator(data=data)) if data != v.data else Read(None, v)


# -- trust ------------------------------------------------------------------------------------


class Unverifiable(ReleaseError):
    """A trust root is set but cannot check an index (a Sigstore root without the identity that
    signs indexes): the index is not used, `latest` works as before."""


def index_root(trust: Any, index_identity: str | None) -> Any:
    """The trust root an index must be signed by, or None when none is configured.

    Raises:
        Unverifiable: a Sigstore root (identity or keyless) without `index_identity`.
    """
    from pipeline.signing import TrustRoot

    root = trust.root
    if root is not None and root.kind in ("key", "certificate"):
        return root
    if root is None and not trust.keyless:
        return None
    if not index_identity:
        raise Unverifiable(
            "the trust root is a Sigstore identity, and an index is signed by whichever workflow "
            "changed it last: give that identity (--index-identity, $RELEASE_INDEX_IDENTITY) to "
            "use channels and yanks; until then 'latest' works as without an index"
        )
    issuer = root.issuer if root is not None else trust.issuer
    return TrustRoot("sigstore", identity=index_identity, issuer=issuer)


class Memory:
    """The newest verified index of each model, kept in the cache (see the module docstring)."""

    def __init__(self, cache: Any, trust: Any, index_identity: str | None = None):
        self.cache, self.trust, self.index_identity = cache, trust, index_identity

    def path(self, model: str) -> Path:
        return Path(self.cache.root) / model / MEMORY_NAME

    def load(self, model: str) -> Envelope | None:
        """The remembered index when it still verifies under this trust root, else None."""
        try:
            root = index_root(self.trust, self.index_identity)
        except Unverifiable:
            return None
        if root is None:
            return None
        path = self.path(model)
        try:
            with open(path, "rb") as f:
                data = f.read(MAX_INDEX_BYTES + 1)
        except OSError:
            return None
        try:
            env = parse(data, str(path))
            verify(env, root, str(path))
        except ReleaseError as e:
            log.warning("%s: %s; not using it", path, e)
            return None
        return env if env.index.model == model else None

    def check(self, model: str, env: Envelope, where: str) -> None:
        """Refuse a replay: a lower sequence than the remembered one, or the same with other
        content.

        Raises:
            IntegrityError: names both sequences.
        """
        known = self.load(model)
        if known is None:
            return
        seq, have = env.index.sequence, known.index.sequence
        if seq < have:
            raise IntegrityError(
                f"{where}: sequence {seq}, older than sequence {have}, which this client already "
                "verified: refusing a replayed index (the source serves an old copy)"
            )
        if seq == have and env.signed != known.signed:
            raise IntegrityError(
                f"{where}: sequence {seq} with other content than the sequence {seq} this client "
                "verified: refusing it (two documents under one sequence)"
            )

    def remember(self, model: str, env: Envelope) -> None:
        """Keep `env` when its sequence is higher than the remembered one (under a lock, so
        processes sharing the cache never lower it)."""
        path = self.path(model)
        try:
            with self.cache.lock(f"{model}#index", f"{model} index", timeout=30):
                known = self.load(model)
                if known is not None and known.index.sequence >= env.index.sequence:
                    return
                atomic.write_bytes(path, env.to_bytes())
        except (OSError, ReleaseError) as e:
            log.warning("%s: could not remember the index (%s); it is used all the same", path, e)


# -- choosing a channel's version -------------------------------------------------------------


@dataclass(frozen=True)
class Choice:
    """What a source's index says a channel serves."""

    channel: str
    version: str
    sequence: int
    authenticated: str | None  # "signed by ..."; None: not authenticated
    local: bool  # the index is the operator's own local directory's
    source: str
    skipped: tuple[tuple[str, str], ...] = ()  # yanked versions skipped: (version, reason)
    index: Index | None = field(default=None, compare=False)
    envelope: Envelope | None = field(default=None, compare=False, repr=False)

    @property
    def trusted(self) -> bool:
        """The version it names may be lower than what the cache verified (a rollback)."""
        return bool(self.authenticated) or self.local


_said: set[str] = set()


def _once(key: str, message: str, *args: Any) -> None:
    if key not in _said:
        _said.add(key)
        log.info(message, *args)


def check_envelope(
    data: bytes,
    source: Any,
    model: str,
    *,
    trust: Any,
    memory: Memory | None,
    index_identity: str | None,
    now: datetime | None = None,
) -> tuple[Envelope, str | None]:
    """Parse and authenticate an index read from `source`; (envelope, how authenticated).

    Raises:
        InputError: not an index.
        IntegrityError: another model's, badly or not signed (with a trust root), a replay,
            expired, or older than the maximum age.
        Unverifiable: see `index_root`.
    """
    where = f"{getattr(source, 'name', source)}: {model}/{INDEX_NAME}"
    env = parse(data, where)
    if env.index.model != model:
        raise IntegrityError(f"{where}: the index of {env.index.model}, expected {model}")
    verdict = None
    root = index_root(trust, index_identity)
    if root is not None:
        verdict = verify(env, root, where)
        if memory is not None:
            memory.check(model, env, where)
    problem = env.index.freshness_problem(now or now_utc(), trust.max_age)
    if problem:
        raise IntegrityError(f"{where}: {problem}")
    return env, verdict


def choose(
    source: Any,
    model: str,
    channel: str,
    *,
    trust: Any,
    memory: Memory | None,
    index_identity: str | None = None,
    now: datetime | None = None,
) -> Choice | None:
    """The version `source`'s index names for `channel`, or None when the source has no index
    (or one this client cannot verify) and no index was ever verified here: then `latest` works
    as it did before indexes.

    Raises:
        IntegrityError: the index fails a check (module docstring), or the source has no index
            although this client verified one before (a source hiding it).
        InputError: no such channel; every version it could serve is yanked.
        RemoteError: the source failed.
    """
    from pipeline.client.trust import is_local

    try:
        data = read_index(source, model).data
    except ArtifactNotFound:
        known = memory.load(model) if memory is not None else None
        if known is not None:
            raise IntegrityError(
                f"{source.name}: no index of {model}, but this client verified its sequence "
                f"{known.index.sequence}: refusing to fall back to the unsigned 'latest' pointer "
                "(the source lost its index, or hides it)"
            ) from None
        return None
    assert data is not None
    try:
        env, verdict = check_envelope(
            data, source, model, trust=trust, memory=memory, index_identity=index_identity, now=now
        )
    except Unverifiable as e:
        _once(f"unverifiable:{model}", "%s: index not used: %s", model, e)
        return None
    pick = env.index.pick(channel)
    for v, reason in pick.skipped:
        log.warning(
            "%s: %s %s is yanked (%s); channel %r serves %s",
            source.name,
            model,
            v,
            reason,
            channel,
            pick.version,
        )
    if verdict and memory is not None:
        memory.remember(model, env)
    return Choice(
        channel,
        pick.version,
        env.index.sequence,
        verdict,
        is_local(source),
        source.name,
        pick.skipped,
        env.index,
        env,
    )


def yank_reason(
    model: str,
    version: str,
    *,
    memory: Memory | None,
    source: Any = None,
    trust: Any = None,
    index_identity: str | None = None,
) -> str | None:
    """Why `version` is yanked, or None: from the remembered index, else (best effort, one
    small read) from `source`'s index. Never raises: a pin works without an index."""
    known = memory.load(model) if memory is not None else None
    if known is not None:
        return known.index.yanked.get(version)
    if source is None:
        return None
    try:
        data = read_index(source, model).data
        assert data is not None
        env, _ = check_envelope(
            data, source, model, trust=trust, memory=memory, index_identity=index_identity
        )
    except (ReleaseError, AssertionError) as e:
        log.debug("%s: no index to check %s %s against: %s", source.name, model, version, e)
        return None
    return env.index.yanked.get(version)


def warn_yanked(model: str, version: str, reason: str | None) -> None:
    if reason is not None:
        log.warning(
            "%s %s is YANKED: %s; it is served because it was asked for by its exact version",
            model,
            version,
            reason,
        )


# -- release status ---------------------------------------------------------------------------


@dataclass
class SourceStatus:
    """One source's index as `release status` shows it."""

    source: str
    sequence: int | None = None
    issued: str | None = None
    expires: str | None = None
    age_days: float | None = None
    channels: dict[str, str] = field(default_factory=dict)
    serves: dict[str, str] = field(default_factory=dict)  # channel -> version (yanks skipped)
    versions: list[str] = field(default_factory=list)
    yanked: dict[str, str] = field(default_factory=dict)
    signed: bool = False
    verified: str | None = None  # how, when a trust root was given
    problem: str | None = None  # why the index is not usable (or not there)
    latest: str | None = None  # the `latest` pointer where there is one

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def status(
    sources: list[Any],
    model: str,
    *,
    trust: Any,
    index_identity: str | None = None,
    now: datetime | None = None,
) -> list[SourceStatus]:
    """Each source's index of `model`, read and checked (nothing remembered)."""
    now = now or now_utc()
    out = []
    for source in sources:
        s = SourceStatus(source.name)
        out.append(s)
        with contextlib.suppress(ReleaseError):
            if (
                isinstance(source, LocalSource | MirrorSource)
                or type(source).__name__ == "S3Source"
            ):
                s.latest = source.latest(model)
        try:
            data = read_index(source, model).data
            assert data is not None
            env = parse(data, f"{source.name}: {model}/{INDEX_NAME}")
        except ArtifactNotFound:
            s.problem = "no index (clients use the 'latest' pointer)"
            continue
        except (ReleaseError, InputError) as e:
            s.problem = str(e)
            continue
        idx = env.index
        s.sequence, s.issued, s.expires = idx.sequence, idx.issued, idx.expires
        s.age_days = round((now - idx.issued_at()).total_seconds() / 86400, 3)
        s.channels, s.versions, s.yanked = dict(idx.channels), list(idx.versions), dict(idx.yanked)
        s.signed = env.signature is not None
        for name in idx.channels:
            with contextlib.suppress(ReleaseError):
                s.serves[name] = idx.pick(name).version
        try:
            _, s.verified = check_envelope(
                data,
                source,
                model,
                trust=trust,
                memory=None,
                index_identity=index_identity,
                now=now,
            )
        except ReleaseError as e:
            s.problem = str(e)
    return out
