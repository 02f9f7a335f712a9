"""Key material and what both sides of signing share: PEM keys (read, checked, generated),
key ids as model-signing writes them, the names of the signing variables, the files a bundle
covers, and the base64 that bundles carry."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.errors import ConfigError
from pipeline.manifest import MANIFEST_NAME, Manifest

SIGNING_KEY_ENV = "RELEASE_SIGNING_KEY"
SIGNING_CERTIFICATE_ENV = "RELEASE_SIGNING_CERTIFICATE"
SIGNING_METHOD_ENV = "RELEASE_SIGNING"
METHODS = ("key", "certificate", "sigstore")
HASH_ALGORITHM = "sha256"  # see the docstring of pipeline.signing
GITHUB_ISSUER = "https://token.actions.githubusercontent.com"
RELEASE_WORKFLOW = ".github/workflows/release.yml"
_CURVES = ("secp256r1", "secp384r1", "secp521r1")  # what model-signing accepts


class _Blob:
    """Bytes in the shape model-signing reads key, certificate and bundle files in."""

    def __init__(self, data: bytes):
        self._data = data

    def read_bytes(self) -> bytes:
        return self._data

    def read_text(self, encoding: str = "utf-8") -> str:
        return self._data.decode(encoding)


def _text(value: str | bytes) -> bytes:
    return value.encode() if isinstance(value, str) else bytes(value)


def read_material(value: str | bytes | Path, what: str) -> bytes:
    """Key or certificate material given as PEM text or as the path of a PEM file.

    Raises:
        ConfigError: empty or blank, or a path that does not exist (never "no check").
    """
    if isinstance(value, Path):
        try:
            return value.read_bytes()
        except OSError as e:
            raise ConfigError(
                f"{what}: cannot read {value}: {e.strerror}; check the path and its permissions"
            ) from None
    data = _text(value)
    if not data.strip():
        raise ConfigError(
            f"{what}: empty; expected PEM text or the path of a PEM file (an empty value never "
            "turns checking off: leave the option out instead)"
        )
    if data.lstrip().startswith(b"-----BEGIN"):
        return data.strip() + b"\n"
    path = Path(data.decode("utf-8", "replace").strip()).expanduser()
    if len(data) < 4096 and path.is_file():
        return path.read_bytes()
    raise ConfigError(
        f"{what}: expected PEM text (-----BEGIN ...) or the path of a PEM file, found neither"
    )


def load_private_key(pem: str | bytes, what: str = SIGNING_KEY_ENV) -> Any:
    """An EC private key (PEM, unencrypted) of a curve model-signing supports.

    Raises:
        ConfigError: not such a key (the key itself is never echoed).
    """
    data = _text(pem).strip()
    if not data:
        raise ConfigError(f"{what}: empty; expected a PEM EC private key")
    return _ec_key(
        data,
        what,
        private=True,
        unreadable="give an unencrypted PEM EC private key (make one with `release keygen`)",
        wrong=" (what OpenSSF Model Signing uses)",
        instead="make one with `release keygen`",
    )


def load_public_key(pem: bytes, what: str = "public key") -> Any:
    """An EC public key (PEM) of a curve model-signing supports.

    Raises:
        ConfigError: not such a key.
    """
    return _ec_key(
        pem,
        what,
        private=False,
        unreadable="give the public key `release keygen` printed beside the signing key",
        wrong="",
        instead="give the public half of the release signing key",
    )


def _ec_key(
    pem: bytes, what: str, *, private: bool, unreadable: str, wrong: str, instead: str
) -> Any:
    """A PEM key that must be an EC key of one of `_CURVES` (ConfigError otherwise, with the
    advice given; the key itself is never echoed)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    kind = "private" if private else "public"
    try:
        key = (
            serialization.load_pem_private_key(pem, password=None)
            if private
            else serialization.load_pem_public_key(pem)
        )
    except (ValueError, TypeError) as e:
        raise ConfigError(
            f"{what}: not a readable PEM {kind} key ({type(e).__name__}); {unreadable}"
        ) from None
    expected = ec.EllipticCurvePrivateKey if private else ec.EllipticCurvePublicKey
    if not isinstance(key, expected) or key.curve.name not in _CURVES:
        raise ConfigError(
            f"{what}: expected an ECDSA P-256, P-384 or P-521 {kind} key{wrong}, found "
            f"{type(key).__name__}; {instead}"
        )
    return key


def key_id(public_key: Any) -> str:
    """The key's id as model-signing writes it into a bundle: sha256 of its PEM."""
    from cryptography.hazmat.primitives import serialization

    pem = public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(pem).hexdigest()


@dataclass(frozen=True)
class KeyPair:
    private_pem: str
    public_pem: str  # what servers configure as their trust root


def generate() -> KeyPair:
    """A new ECDSA P-256 key pair."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return KeyPair(private, public)


def github_identity(repo: str, tag: str, workflow: str = RELEASE_WORKFLOW) -> str:
    """The certificate identity GitHub Actions gives `workflow` of `repo` run for `tag`."""
    return f"https://github.com/{repo}/{workflow}@refs/tags/{tag}"


def release_files(manifest: Manifest) -> list[str]:
    """The names a release's bundle covers: manifest.json and every file of the manifest."""
    return [MANIFEST_NAME, *(f.name for f in manifest.files)]


def _b64(value: Any) -> bytes:
    import base64

    if not isinstance(value, str):
        raise ValueError("expected base64 text")
    padded = value + "=" * (-len(value) % 4)
    return base64.b64decode(
        padded, altchars=b"-_" if ("-" in value or "_" in value) else None, validate=True
    )
