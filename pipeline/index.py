"""The model index: one small signed document per model, `<model>/index.json`, beside `latest`.

It says which version each channel names (`latest` is the default channel; `canary`, `stable`
or any other name an operator picks), which versions are yanked and why, and carries a sequence
number that goes up with every change, the time it was issued and an optional expiry. A client
never accepts an index older (lower sequence) than one it has verified, while the version a
channel names may go down: that is how an operator rolls a fleet back (TUF's rule: the metadata
version only rises, the target it names may fall).

The file is one JSON envelope, so that every host replaces it in one atomic write (an S3 PUT, a
rename, an HF commit) and a poll is one conditional request for one object:

    {"format": "fastai-release/index", "format_version": 1,
     "signed": "<the index document, as the exact text that was signed>",
     "signature": <an OpenSSF Model Signing bundle over that text, named index.json> | null}

The signature is the same kind of bundle as `model.sig`, made by the same signer (key,
certificate or Sigstore) over a one-file release whose only file, `index.json`, holds the
`signed` text; so the same trust root verifies both (`verify`), and `model_signing verify` can
check it too once the text is written to a file of that name. The envelope and the document are
parsed strictly and bounded in size: an index from a mirror is hostile input until verified.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from pipeline.errors import InputError, IntegrityError
from pipeline.manifest import is_safe_name, is_safe_version

INDEX_NAME = "index.json"
FORMAT = "fastai-release/index"
FORMAT_VERSION = 1
DEFAULT_CHANNEL = "latest"  # what `latest` always meant; the `latest` pointer file mirrors it
MAX_INDEX_BYTES = 1 << 20  # the envelope; a Sigstore bundle is ~10 kB, a key bundle ~1.5 kB
MAX_CHANNELS = 64
MAX_VERSIONS = 10_000
MAX_REASON = 500
_CHANNEL = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")  # fullmatch


def is_channel_name(name: object) -> bool:
    """A channel name: lower-case letters, digits, `.`, `_`, `-`, at most 64 characters."""
    return isinstance(name, str) and bool(_CHANNEL.fullmatch(name))


def check_channel(name: str) -> str:
    """`name` when it is a channel name.

    Raises:
        InputError: it is not (names the rule).
    """
    if not is_channel_name(name):
        raise InputError(
            f"channel: expected lower-case letters, digits, '.', '_' or '-' (at most 64, starting "
            f"with a letter or digit), found {name!r}"
        )
    return name


def version_key(v: str) -> tuple:
    """PEP 440 order (1.10.0 after 1.9.0); names that are not versions sort first, by name."""
    from packaging.version import InvalidVersion, Version

    try:
        return (1, Version(v), v)
    except InvalidVersion:
        return (0, v, v)


def _is_prerelease(v: str) -> bool:
    from packaging.version import InvalidVersion, Version

    try:
        return Version(v).is_prerelease
    except InvalidVersion:
        return False


def now_utc() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def stamp(t: datetime) -> str:
    """A UTC timestamp as the index writes it."""
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _time(value: Any, key: str, where: str) -> datetime:
    if not isinstance(value, str) or len(value) > 40:
        raise InputError(f"{where}: {key}: expected a UTC timestamp, found {value!r:.60}")
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InputError(f"{where}: {key}: not a timestamp: {value!r}") from None
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


class YankedOnly(InputError):
    """A channel names a yanked version and no older version of the index is left to serve."""


@dataclass(frozen=True)
class Pick:
    """What a channel resolves to: the version, and the yanked versions skipped on the way."""

    channel: str
    version: str
    skipped: tuple[tuple[str, str], ...] = ()  # (version, reason), newest first


@dataclass(frozen=True)
class Index:
    """One model's index (see the module docstring). Immutable: every change makes a new one."""

    model: str
    sequence: int = 0
    issued: str = ""
    expires: str | None = None
    channels: Mapping[str, str] = field(default_factory=dict)
    versions: tuple[str, ...] = ()
    yanked: Mapping[str, str] = field(default_factory=dict)  # version -> reason

    # -- the document ------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "model": self.model,
            "sequence": self.sequence,
            "issued": self.issued,
            "expires": self.expires,
            "channels": dict(sorted(self.channels.items())),
            "versions": sorted(self.versions, key=version_key),
            "yanked": dict(sorted(self.yanked.items(), key=lambda kv: version_key(kv[0]))),
        }

    def to_bytes(self) -> bytes:
        """The exact text that is signed (sorted, indented, UTF-8, a final newline)."""
        return (json.dumps(self.to_dict(), indent=1, ensure_ascii=False) + "\n").encode()

    @classmethod
    def from_bytes(cls, data: bytes, where: str) -> Index:
        """Parse and check a document (every field typed and bounded).

        Raises:
            InputError: not an index document of this format, or a field out of its bounds.
        """
        d = _bounded_json(data, where)
        if not isinstance(d, dict):
            raise InputError(f"{where}: expected a JSON object")
        if d.get("format") != FORMAT:
            raise InputError(f"{where}: format {d.get('format')!r:.60}, expected {FORMAT!r}")
        fv = d.get("format_version")
        if not isinstance(fv, int) or isinstance(fv, bool) or fv < 1:
            raise InputError(f"{where}: format_version {fv!r:.20} is not a version number")
        if fv > FORMAT_VERSION:
            raise InputError(
                f"{where}: format_version {fv}; this fastai-release reads {FORMAT_VERSION}: upgrade it"
            )
        model = d.get("model")
        if not is_safe_name(model):
            raise InputError(f"{where}: model: not a plain name: {model!r:.80}")
        seq = d.get("sequence")
        if not isinstance(seq, int) or isinstance(seq, bool) or not 0 <= seq < 2**63:
            raise InputError(f"{where}: sequence: expected a whole number >= 0, found {seq!r:.40}")
        issued = d.get("issued")
        _time(issued, "issued", where)
        expires = d.get("expires")
        if expires is not None:
            _time(expires, "expires", where)
        channels = d.get("channels")
        if not isinstance(channels, dict) or len(channels) > MAX_CHANNELS:
            raise InputError(f"{where}: channels: expected an object of at most {MAX_CHANNELS}")
        for name, version in channels.items():
            if not is_channel_name(name) or not is_safe_version(version):
                raise InputError(f"{where}: channels: {name!r:.80}: {version!r:.80} is not valid")
        versions = d.get("versions")
        if not isinstance(versions, list) or len(versions) > MAX_VERSIONS:
            raise InputError(f"{where}: versions: expected a list of at most {MAX_VERSIONS}")
        if not all(is_safe_version(v) for v in versions) or len(set(versions)) != len(versions):
            raise InputError(f"{where}: versions: a name that is not a version, or one twice")
        yanked = d.get("yanked")
        if not isinstance(yanked, dict) or len(yanked) > MAX_VERSIONS:
            raise InputError(f"{where}: yanked: expected an object of version: reason")
        for v, reason in yanked.items():
            if not is_safe_version(v) or not isinstance(reason, str) or len(reason) > MAX_REASON:
                raise InputError(f"{where}: yanked: {v!r:.80}: a version and a short reason")
        listed = set(versions)
        stray = sorted((set(channels.values()) | set(yanked)) - listed)
        if stray:
            raise InputError(f"{where}: names versions it does not list: {', '.join(stray[:5])}")
        return cls(
            model,
            seq,
            issued,
            expires,
            dict(channels),
            tuple(sorted(versions, key=version_key)),
            dict(yanked),
        )

    # -- reading -----------------------------------------------------------------------------

    def pick(self, channel: str) -> Pick:
        """The version `channel` names, skipping yanked versions downwards (PEP 592: a yanked
        version is never chosen by a channel; an exact pin still gets it, with a warning).

        Raises:
            InputError: no such channel.
            YankedOnly: the channel's version and every older one are yanked.
        """
        named = self.channels.get(channel)
        if named is None:
            raise InputError(
                f"{self.model} index: no channel {channel!r} (channels: "
                f"{', '.join(sorted(self.channels)) or 'none'}); promote a version to it first"
            )
        skipped: list[tuple[str, str]] = []
        pre = _is_prerelease(named)
        for v in sorted(self.versions, key=version_key, reverse=True):
            if version_key(v) > version_key(named) or (v != named and _is_prerelease(v) > pre):
                continue  # newer, or a pre-release below a final version: never a fallback
            if v in self.yanked:
                skipped.append((v, self.yanked[v]))
                continue
            return Pick(channel, v, tuple(skipped))
        raise YankedOnly(
            f"{self.model} index: channel {channel!r} names {named}, which is yanked "
            f"({self.yanked.get(named, '')!r}), and no older version is left that is not; "
            f"promote a good version to {channel!r}"
        )

    def issued_at(self) -> datetime:
        return _time(self.issued, "issued", self.model)

    def expires_at(self) -> datetime | None:
        return None if self.expires is None else _time(self.expires, "expires", self.model)

    def freshness_problem(self, now: datetime, max_age: float | None) -> str | None:
        """Why this index may not be used now (past its expiry; older than `max_age` seconds
        when that is set), or None."""
        expires = self.expires_at()
        if expires is not None and now > expires:
            return (
                f"expired at {self.expires} (sequence {self.sequence}): the source may be frozen "
                "on an old index, or the operator did not re-issue it (`release reissue`)"
            )
        if max_age is not None:
            age = (now - self.issued_at()).total_seconds()
            if age > max_age:
                return (
                    f"issued {age / 86400:.1f} days ago (sequence {self.sequence}), more than the "
                    f"maximum age of {max_age / 86400:.1f} days: the source may be frozen on an "
                    "old index, or it was not re-issued (`release reissue`)"
                )
        return None

    # -- changes (each returns a new index; `issue` stamps it) -----------------------------

    def with_version(self, version: str, *, move_latest: bool = False) -> Index:
        """`version` listed; with `move_latest`, the default channel moved to it when it is
        newer than what the channel names (or the channel is unset)."""
        versions = self.versions if version in self.versions else (*self.versions, version)
        channels = dict(self.channels)
        current = channels.get(DEFAULT_CHANNEL)
        if move_latest and (current is None or version_key(version) > version_key(current)):
            channels[DEFAULT_CHANNEL] = version
        return replace(self, versions=tuple(sorted(versions, key=version_key)), channels=channels)

    def promoted(self, version: str, channel: str) -> Index:
        return replace(self.with_version(version), channels={**self.channels, channel: version})

    def yank(self, version: str, reason: str) -> Index:
        return replace(self.with_version(version), yanked={**self.yanked, version: reason})

    def unyank(self, version: str) -> Index:
        return replace(self, yanked={k: v for k, v in self.yanked.items() if k != version})

    def with_expiry(self, expires: str | None) -> Index:
        return replace(self, expires=expires)

    def same_content(self, other: Index) -> bool:
        """The same channels, versions, yanks and expiry (sequence and issue time aside)."""
        return (
            self.model,
            self.expires,
            dict(self.channels),
            self.versions,
            dict(self.yanked),
        ) == (
            other.model,
            other.expires,
            dict(other.channels),
            other.versions,
            dict(other.yanked),
        )

    def issue(self, sequence: int, now: datetime, expires_in: timedelta | None = None) -> Index:
        """This content as the next document: `sequence`, issued `now`, and an expiry
        `expires_in` from now when given (else the expiry it had, or none)."""
        expires = stamp(now + expires_in) if expires_in is not None else self.expires
        return replace(self, sequence=sequence, issued=stamp(now), expires=expires)


def expiry_in_days(days: float | None) -> timedelta | None:
    """`--expires-days N` as a timedelta (None: keep the index's expiry).

    Raises:
        InputError: not a positive number of days.
    """
    if days is None:
        return None
    if not days > 0:
        raise InputError(f"--expires-days: expected a positive number of days, found {days!r}")
    return timedelta(days=days)


# -- the envelope -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Envelope:
    """An `index.json` as stored: the signed text and its bundle (None: unsigned)."""

    signed: bytes
    signature: bytes | None
    index: Index

    def to_bytes(self) -> bytes:
        sig = None if self.signature is None else json.loads(self.signature)
        body = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "signed": self.signed.decode(),
            "signature": sig,
        }
        return (json.dumps(body, indent=1, ensure_ascii=False) + "\n").encode()

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.signed).hexdigest()


def _bounded_json(data: bytes, where: str) -> Any:
    """`data` parsed as JSON, when it is no larger than an index may be (the document and its
    envelope have the same bound).

    Raises:
        InputError: too large, or not JSON.
    """
    if len(data) > MAX_INDEX_BYTES:
        raise InputError(f"{where}: more than {MAX_INDEX_BYTES} bytes: not an index")
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as e:
        raise InputError(f"{where}: not JSON ({type(e).__name__})") from None


def parse(data: bytes, where: str) -> Envelope:
    """An `index.json` read from anywhere: bounded, every field checked; not verified.

    Raises:
        InputError: not an index envelope of this format (names what is wrong).
    """
    d = _bounded_json(data, where)
    if not isinstance(d, dict) or d.get("format") != FORMAT:
        raise InputError(f"{where}: not a {FORMAT} envelope")
    signed = d.get("signed")
    if not isinstance(signed, str):
        raise InputError(f"{where}: signed: expected the index document as text")
    signature = d.get("signature")
    if signature is not None and not isinstance(signature, dict):
        raise InputError(f"{where}: signature: expected a bundle object or null")
    signed_bytes = signed.encode()
    index = Index.from_bytes(signed_bytes, f"{where} (signed document)")
    sig = None if signature is None else json.dumps(signature).encode()
    return Envelope(signed_bytes, sig, index)


def seal(index: Index, signer: Any | None) -> Envelope:
    """The envelope of `index`, signed by `signer` (a `pipeline.signing.Signer`) when given.

    Raises:
        ConfigError / RemoteError: the signer cannot sign (as `Signer.sign`).
    """
    text = index.to_bytes()
    signature = None
    if signer is not None:
        signature = signer.sign_blob(INDEX_NAME, text, f"{index.model}-index")
    return Envelope(text, signature, index)


def verify(envelope: Envelope, root: Any, where: str) -> str:
    """Check the envelope's bundle against a trust root (`pipeline.signing.TrustRoot`); return
    how it was authenticated.

    Raises:
        IntegrityError: unsigned, badly signed, signed by someone else, or a bundle of other
            files than this document.
    """
    if envelope.signature is None:
        raise IntegrityError(
            f"{where}: the index is not signed, and {root.describe()} must sign it: refusing it"
        )
    digests = root.verify(envelope.signature, f"{where} (signature)")
    if digests != {INDEX_NAME: envelope.sha256}:
        raise IntegrityError(
            f"{where}: the signature covers {sorted(digests)}, not this index document (sha256 "
            f"{envelope.sha256[:16]}…): it was altered or belongs to another index; do not use it"
        )
    return f"signed by {root.describe()}"


def signed_digest_unverified(envelope: Envelope) -> bool:
    """Whether the bundle lists this document's digest, WITHOUT checking the signature (only
    for a publisher reading back what it wrote with a keyless signer, which it cannot verify)."""
    from pipeline.signing import signed_digests_unverified

    if envelope.signature is None:
        return False
    try:
        return signed_digests_unverified(envelope.signature) == {INDEX_NAME: envelope.sha256}
    except (ValueError, KeyError, TypeError):
        return False
