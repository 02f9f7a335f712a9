"""The client's rules for a model's index (`pipeline/index.py`): channels, yanks, replay, freeze.

- Where it is: `<base>/<model>/index.json` on a directory, a mirror or an S3 bucket; the asset
  `index.json` of the release `<model>-index` on GitHub; `index.json` on the branch `index` of
  an HF repository. `read_index` reads it with a conditional request where the host supports it
  (index_reads.py: ETag / If-None-Match, else Last-Modified / If-Modified-Since; S3's
  IfNoneMatch; a file's stat), so an idle poll costs one small request answered 304.
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

import logging
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from pipeline import atomic
from pipeline.client.index_reads import (
    GITHUB_INDEX_TAG,
    HF_INDEX_REVISION,
    Read,
    Validator,
    read_index,
)
from pipeline.errors import ArtifactNotFound, IntegrityError, ReleaseError
from pipeline.index import (
    INDEX_NAME,
    MAX_INDEX_BYTES,
    Envelope,
    Index,
    now_utc,
    parse,
    verify,
)

__all__ = [  # and the names of index_reads.py imported from here before the split
    "GITHUB_INDEX_TAG",
    "HF_INDEX_REVISION",
    "MEMORY_NAME",
    "Choice",
    "Memory",
    "Read",
    "Unverifiable",
    "Validator",
    "check_envelope",
    "choose",
    "index_root",
    "read_index",
    "status",
    "warn_yanked",
    "yank_reason",
]

log = logging.getLogger("pipeline.client")
MEMORY_NAME = ".index.json"  # in <cache>/<model>/: a dot name is never a version directory


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


def status(*args: Any, **kwargs: Any) -> Any:
    """`release status` (index_status.status): each source's index of a model, checked."""
    from pipeline.client.index_status import status as read_status

    return read_status(*args, **kwargs)
