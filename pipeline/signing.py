"""Ed25519 signatures of manifest.json (cryptography; no home-made crypto).

A signature file `manifest.json.sig` holds the base64 of the 64-byte Ed25519 signature of the
exact bytes of manifest.json. Keys: a private key as PEM (PKCS8) or raw base64 (32 bytes); a
public key as PEM (SubjectPublicKeyInfo) or raw base64 (32 bytes), which is what servers pin.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from pipeline.errors import ConfigError, IntegrityError

SIGNING_KEY_ENV = "RELEASE_SIGNING_KEY"


def _raw_or_pem(text: str | bytes, what: str) -> tuple[str, bytes]:
    data = text.encode() if isinstance(text, str) else text
    stripped = data.strip()
    if stripped.startswith(b"-----BEGIN"):
        return "pem", stripped
    try:
        raw = base64.b64decode(stripped, validate=True)
    except (binascii.Error, ValueError) as e:
        raise ConfigError(
            f"{what}: expected a PEM key or the base64 of 32 raw bytes, found neither"
        ) from e
    if len(raw) != 32:
        raise ConfigError(f"{what}: expected the base64 of 32 raw bytes, found {len(raw)} bytes")
    return "raw", raw


def load_private_key(text: str | bytes, what: str = SIGNING_KEY_ENV):  # noqa: ANN201
    """An Ed25519 private key from PEM or raw base64.

    Raises:
        ConfigError: not an Ed25519 private key (the key itself is never echoed).
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    kind, data = _raw_or_pem(text, what)
    try:
        key = (
            Ed25519PrivateKey.from_private_bytes(data)
            if kind == "raw"
            else serialization.load_pem_private_key(data, password=None)
        )
    except (ValueError, TypeError) as e:
        raise ConfigError(
            f"{what}: not a readable Ed25519 private key ({type(e).__name__})"
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"{what}: expected an Ed25519 private key, found {type(key).__name__}")
    return key


def load_public_key(text: str | bytes, what: str = "public key"):  # noqa: ANN201
    """An Ed25519 public key from PEM or raw base64.

    Raises:
        ConfigError: not an Ed25519 public key.
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    kind, data = _raw_or_pem(text, what)
    try:
        key = (
            Ed25519PublicKey.from_public_bytes(data)
            if kind == "raw"
            else serialization.load_pem_public_key(data)
        )
    except (ValueError, TypeError) as e:
        raise ConfigError(
            f"{what}: not a readable Ed25519 public key ({type(e).__name__})"
        ) from None
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError(f"{what}: expected an Ed25519 public key, found {type(key).__name__}")
    return key


@dataclass(frozen=True)
class KeyPair:
    private_pem: str
    public_b64: str  # what servers pin


def generate() -> KeyPair:
    """A new Ed25519 key pair."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return KeyPair(pem, public_key_b64(key.public_key()))


def public_key_b64(public_key) -> str:  # noqa: ANN001
    from cryptography.hazmat.primitives import serialization

    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def sign(manifest_bytes: bytes, private_key) -> bytes:  # noqa: ANN001
    """The content of manifest.json.sig for these manifest bytes."""
    return base64.b64encode(private_key.sign(manifest_bytes)) + b"\n"


def verify(
    manifest_bytes: bytes, signature_file: bytes, public_key, where: str = "manifest.json.sig"
) -> None:  # noqa: ANN001
    """Check a manifest.json.sig against the manifest bytes.

    Raises:
        IntegrityError: the signature is malformed or does not match (the manifest was changed,
            or signed by another key).
    """
    from cryptography.exceptions import InvalidSignature

    try:
        sig = base64.b64decode(signature_file.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise IntegrityError(f"{where}: not a base64 signature") from None
    try:
        public_key.verify(sig, manifest_bytes)
    except InvalidSignature:
        raise IntegrityError(
            f"{where}: the signature does not match manifest.json for public key {public_key_b64(public_key)}; "
            "the manifest was altered or signed with another key: do not use this release"
        ) from None
