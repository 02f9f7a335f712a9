"""What makes a manifest trusted, and what a server may do with an untrusted one.

A manifest is *authenticated* when its `model.sig` bundle is signed by the configured trust root
(a public key, a certificate of your PKI for the configured identity, or a Sigstore identity:
see pipeline/signing.py) or when its blake3 is the pinned one. Files are always checked against the manifest; the
question here is who wrote the manifest.

The rule for pickles (which run code when loaded): a pickle variant is only used when its
manifest is authenticated, or came from a local directory (the operator's own store:
integrity only), or the caller said `allow_unverified` (then a WARNING on every load). Otherwise
the client takes a variant that executes nothing (onnx) or refuses, exit 5.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline import signing
from pipeline.checksums import blake3_bytes
from pipeline.errors import ConfigError, IntegrityError
from pipeline.manifest import SIGNATURE_NAME, Manifest

log = logging.getLogger("pipeline.client")
_HEX64 = re.compile(r"[0-9a-f]{64}")
HOW_TO_TRUST = (
    "configure a trust root: --public-key KEY.pub (the key `release keygen` made, which signs "
    "releases), --certificate-chain CA.pem with --identity (your PKI, the signer's certificate), "
    "--keyless for a github: source or --identity URI (Sigstore), or --pin BLAKE3 (of that "
    "manifest.json); in Python "
    "Client(public_key=..., certificate_chain=..., identity=..., keyless=True, pin=...). "
    "Or take the onnx variant (--variant onnx, pip install 'fastai-release[onnx]'), which executes "
    "nothing; --allow-unverified loads it anyway, at your own risk"
)


class Untrusted(IntegrityError):
    """A pickle variant whose manifest nobody vouched for (exit 5)."""


def _blank(value: Any) -> bool:
    return isinstance(value, str | bytes) and not value.strip()


def _material(value: Any, what: str) -> bytes | None:
    if value is None:
        return None
    if isinstance(value, str | bytes | Path):
        return signing.read_material(value, what)
    from cryptography.hazmat.primitives import serialization  # a key object

    try:
        return value.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    except AttributeError:
        raise ConfigError(f"{what}: expected PEM text, a path or a public key object") from None


def is_local(source: Any) -> bool:
    """A directory on this machine (the operator's own store), not a remote source."""
    return bool(getattr(source, "local", False))


def _one_root(public_key: Any, certificate_chain: Any, identity: Any, keyless: bool) -> None:
    """Raises ConfigError when more than one trust root is given (with a certificate chain,
    the identity is the certificate's, not a trust root of its own)."""
    given = [
        w
        for w, v in (
            ("public key", public_key),
            ("certificate chain", certificate_chain),
            ("Sigstore identity", None if certificate_chain is not None else identity),
            ("keyless", keyless or None),
        )
        if v is not None
    ]
    if len(given) > 1:
        raise ConfigError(f"trust: give one trust root, found {' and '.join(given)}")


def _root(
    public_key: Any,
    certificate_chain: Any,
    identity: str | None,
    issuer: str | None,
    sigstore_root: bytes,
) -> signing.TrustRoot | None:
    """The one trust root the options name (None: keyless, or none at all).

    Raises:
        ConfigError: an unreadable key or chain, a chain without an identity or with an issuer.
    """
    if public_key is not None:
        pem = _material(public_key, "public key")
        signing.load_public_key(pem or b"", "public key")
        return signing.TrustRoot("key", pem or b"")
    if certificate_chain is not None:
        pem = _material(certificate_chain, "certificate chain")
        _check_chain(pem or b"")
        if identity is None:
            raise ConfigError(
                "certificate chain: give --identity too (RELEASE_IDENTITY; in Python "
                "identity=...): the signing certificate's subject alternative name (a URI, "
                'an e-mail address or a DNS name) or its subject, e.g. "CN=release '
                'signer,O=Example" (`openssl x509 -noout -subject -ext subjectAltName -in '
                "signer.pem` shows both). Any certificate your CA issued is no longer "
                "enough: a TLS server certificate of the same CA would sign releases"
            )
        if issuer is not None:
            raise ConfigError(
                "OIDC issuer: applies to Sigstore identities, not to a certificate chain; "
                "leave --identity-issuer out"
            )
        return signing.TrustRoot("certificate", pem or b"", identity=identity.strip())
    if identity is not None:
        return signing.TrustRoot(
            "sigstore",
            identity=identity.strip(),
            issuer=(issuer or signing.GITHUB_ISSUER),
            sigstore_root=sigstore_root,
        )
    return None


@dataclass(frozen=True)
class Trust:
    """The trust root (at most one of a key, a certificate chain, a Sigstore identity), an
    optional pin, and the policy for unauthenticated manifests.

    Use `Trust.from_options` for user input: it refuses empty values instead of turning checks off.
    """

    root: signing.TrustRoot | None = None
    keyless: bool = False  # Sigstore, the identity of each github: source's release workflow
    issuer: str = signing.GITHUB_ISSUER
    sigstore_root: bytes = b""  # keyless: Sigstore's trust root given as a file (no TUF fetch)
    pin: str | None = None  # blake3 of the exact manifest.json bytes
    allow_unverified: bool = False
    max_age: float | None = None  # seconds: the newest manifest of `latest` must be younger

    @classmethod
    def from_options(
        cls,
        public_key: Any = None,
        pin: str | None = None,
        *,
        certificate_chain: Any = None,
        identity: str | None = None,
        issuer: str | None = None,
        keyless: bool = False,
        allow_unverified: bool = False,
        max_age: float | None = None,
        sigstore_trust_root: Any = None,
    ) -> Trust:
        """Build from user input: keys and chains as PEM text, a path, or a key object;
        `identity` may hold `{version}` and `{model}`. With a certificate chain, `identity` is
        required: the signing certificate's SAN (URI, e-mail or DNS name) or its subject (RFC
        4514, e.g. "CN=release signer,O=Example"); without one it is a Sigstore identity.
        `sigstore_trust_root`: Sigstore's `trusted_root.json` (a path or its JSON text) for
        keyless verification without network.

        Raises:
            ConfigError: an empty or blank value (never "off"), an unreadable key or chain, a pin
                that is not 64 hex digits, two trust roots at once, a certificate chain without
                an identity (or with an OIDC issuer), an unusable Sigstore trust root, a
                non-positive max age.
        """
        named = {
            "public key": public_key,
            "certificate chain": certificate_chain,
            "identity": identity,
            "OIDC issuer": issuer,
            "manifest pin": pin,
            "Sigstore trust root": sigstore_trust_root,
        }
        for what, value in named.items():
            if _blank(value):
                raise ConfigError(
                    f"{what}: empty; an empty value never turns checking off: give a value, or "
                    "leave the option (and its environment variable) out"
                )
        _one_root(public_key, certificate_chain, identity, keyless)
        sigstore_root = b""
        if sigstore_trust_root is not None:
            if not (keyless or (identity is not None and certificate_chain is None)):
                raise ConfigError(
                    "Sigstore trust root: given, but the trust root is not Sigstore; it goes "
                    "with --keyless or --identity (without --certificate-chain)"
                )
            sigstore_root = signing.read_sigstore_trust_root(
                sigstore_trust_root, "Sigstore trust root"
            )
        root = _root(public_key, certificate_chain, identity, issuer, sigstore_root)
        if pin is not None:
            pin = pin.strip().lower()
            if not _HEX64.fullmatch(pin):
                raise ConfigError(
                    f"manifest pin: expected the 64 hex digits of blake3(manifest.json), found {pin!r}"
                )
        if max_age is not None and not max_age > 0:
            raise ConfigError(f"max age: expected a positive number of seconds, found {max_age!r}")
        return cls(
            root,
            keyless,
            (issuer or signing.GITHUB_ISSUER).strip(),
            sigstore_root,
            pin,
            allow_unverified,
            max_age,
        )

    @property
    def configured(self) -> bool:
        """Whether manifests are authenticated at all (a trust root or a pin)."""
        return self.root is not None or self.keyless or self.pin is not None

    @property
    def wants_signature(self) -> bool:
        return self.root is not None or self.keyless

    def root_for(self, source: Any, model: str, version: str) -> signing.TrustRoot | None:
        """The trust root for `source`'s release `version` (a Sigstore identity may depend on
        both: GitHub's certificate names the workflow and the tag it ran for).

        Raises:
            ConfigError: keyless without an identity for a source that is not github:.
        """
        if self.root is not None:
            if self.root.kind == "key":
                return self.root
            identity = self.root.identity.replace("{version}", version).replace("{model}", model)
            return dataclasses.replace(self.root, identity=identity)
        if not self.keyless:
            return None
        repo, tag = getattr(source, "repo", None), getattr(source, "tag", None)
        if not str(getattr(source, "name", "")).startswith("github:") or not repo or not tag:
            raise ConfigError(
                f"{getattr(source, 'name', source)}: keyless verification knows the signer's "
                "identity only for github: sources (their release workflow); give --identity "
                "for this source"
            )
        tag_name = tag.replace("{model}", model).replace("{version}", version)
        return signing.TrustRoot(
            "sigstore",
            identity=signing.github_identity(repo, tag_name),
            issuer=self.issuer,
            sigstore_root=self.sigstore_root,
        )

    def describe(self) -> str:
        parts = []
        if self.root is not None:
            parts.append(self.root.describe())
        if self.keyless:
            parts.append("Sigstore, the github: source's release workflow")
        if self.pin:
            parts.append(f"pinned blake3 {self.pin[:16]}…")
        return " + ".join(parts) or "none configured"

    def check(
        self,
        manifest_bytes: bytes,
        signature: bytes | None,
        where: str,
        *,
        source: Any = None,
        manifest: Manifest | None = None,
    ) -> str | None:
        """Authenticate a manifest: how it was authenticated, or None when nothing is configured.

        Raises:
            IntegrityError: not the pinned manifest, unsigned, badly signed, signed by another
                key or identity, or a bundle of other files.
            InputError: the manifest does not parse.
        """
        verdicts = []
        if self.pin is not None:
            found = blake3_bytes(manifest_bytes)
            if found != self.pin:
                raise IntegrityError(
                    f"{where}: blake3 {found[:16]}…, the pinned manifest is {self.pin[:16]}…; "
                    "this is not the release you pinned: do not use it"
                )
            verdicts.append(f"pinned blake3 {self.pin[:16]}…")
        if self.wants_signature:
            manifest = manifest or Manifest.from_json(manifest_bytes, where)
            root = self.root_for(source, manifest.model, manifest.version)
            assert root is not None
            if signature is None:
                raise IntegrityError(
                    f"{where}: no {SIGNATURE_NAME} beside it, and {root.describe()} must sign "
                    "it: refusing an unsigned manifest"
                )
            digests = root.verify(signature, f"{where} ({SIGNATURE_NAME})")
            signing.check_manifest(digests, manifest_bytes, manifest, where)
            verdicts.append(f"signed by {root.describe()}")
        return " + ".join(verdicts) or None

    def check_age(self, manifest: Manifest, where: str, now: datetime | None = None) -> None:
        """Freeze detection: the newest manifest must have been created within `max_age`.

        Raises:
            IntegrityError: it is older (a mirror may be serving a frozen view of the releases).
        """
        if self.max_age is None:
            return
        try:
            created = datetime.fromisoformat(manifest.created.replace("Z", "+00:00"))
        except ValueError:
            raise IntegrityError(
                f"{where}: created {manifest.created!r} is not a timestamp; a maximum age is set"
            ) from None
        if created.tzinfo is None:
            created = created.replace(tzinfo=UTC)
        age = ((now or datetime.now(UTC)) - created).total_seconds()
        if age > self.max_age:
            raise IntegrityError(
                f"{where}: the newest release, {manifest.version}, was signed {age / 86400:.1f} days "
                f"ago, more than the maximum age of {self.max_age / 86400:.1f} days: the source may be "
                "frozen (serving an old view), or no release was made since; pin a version to "
                "use it anyway"
            )


def _check_chain(pem: bytes) -> None:
    from cryptography import x509

    try:
        certs = x509.load_pem_x509_certificates(pem)
    except ValueError:
        certs = []
    if not certs:
        raise ConfigError("certificate chain: expected PEM certificates (your PKI's root)")


_said_local: set[str] = set()


def say_local_once(source_name: str) -> None:
    """A local store is integrity-only: say so once per process and source, at INFO."""
    if source_name not in _said_local:
        _said_local.add(source_name)
        log.info(
            "%s: a local directory; its manifest is not authenticated (integrity only: the "
            "operator owns it)",
            source_name,
        )
