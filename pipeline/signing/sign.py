"""Signing: `Signer` makes `model.sig` over a release's files with model-signing (a key, a
certificate of your PKI, or keyless Sigstore). Imported by `release publish`; a server never
signs."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline.errors import ConfigError, RemoteError, first_line
from pipeline.manifest import SIGNATURE_NAME, Manifest
from pipeline.signing.certificates import _check_signing_certificate, certificate_identities
from pipeline.signing.keys import (
    HASH_ALGORITHM,
    METHODS,
    SIGNING_CERTIFICATE_ENV,
    SIGNING_KEY_ENV,
    SIGNING_METHOD_ENV,
    _text,
    key_id,
    load_private_key,
    release_files,
)
from pipeline.signing.verify import TrustRoot


@dataclass(frozen=True)
class Signer:
    """How `release publish` signs: see the module docstring. Secrets are never in `describe()`."""

    method: str
    private_key: bytes | None = None  # PEM
    certificate: bytes | None = None  # PEM: the signing certificate, then its chain to the root

    @classmethod
    def from_env(cls, env: dict[str, str] | os._Environ[str] | None = None) -> Signer | None:
        """`$RELEASE_SIGNING` (key, certificate or sigstore; default: key when
        `$RELEASE_SIGNING_KEY` is set, certificate when `$RELEASE_SIGNING_CERTIFICATE` is set too,
        else no signing), `$RELEASE_SIGNING_KEY`, `$RELEASE_SIGNING_CERTIFICATE`.

        Raises:
            ConfigError: an unknown method, or a method without what it needs.
        """
        env = os.environ if env is None else env
        method = (env.get(SIGNING_METHOD_ENV) or "").strip().lower()
        key = env.get(SIGNING_KEY_ENV) or None
        cert = env.get(SIGNING_CERTIFICATE_ENV) or None
        if not method:
            if key is None:
                return None
            method = "certificate" if cert else "key"
        signer = cls(method, _text(key) if key else None, _text(cert) if cert else None)
        signer.check()
        return signer

    def check(self) -> None:
        """Everything that can be checked before the build: the method, the key, the certificate.

        Raises:
            ConfigError: names the variable and what is wrong, never the secret.
        """
        if self.method not in METHODS:
            raise ConfigError(
                f"${SIGNING_METHOD_ENV}: expected one of {', '.join(METHODS)}, found {self.method!r}"
            )
        if self.method == "sigstore":
            return
        if not self.private_key:
            raise ConfigError(f"{self.method} signing needs ${SIGNING_KEY_ENV} (a PEM EC key)")
        key = load_private_key(self.private_key)
        if self.method == "certificate":
            from cryptography import x509

            if not self.certificate:
                raise ConfigError(
                    f"certificate signing needs ${SIGNING_CERTIFICATE_ENV}: the PEM signing "
                    "certificate, then its chain (intermediates, then the root)"
                )
            try:
                certs = x509.load_pem_x509_certificates(self.certificate)
            except ValueError:
                raise ConfigError(
                    f"${SIGNING_CERTIFICATE_ENV}: not PEM certificates; give the PEM signing "
                    "certificate, then its chain (intermediates, then the root)"
                ) from None
            if len(certs) < 2:
                raise ConfigError(
                    f"${SIGNING_CERTIFICATE_ENV}: holds one certificate; expected the signing "
                    "certificate followed by its chain (intermediates, then the root)"
                )
            if certs[0].public_key() != key.public_key():
                raise ConfigError(
                    f"${SIGNING_CERTIFICATE_ENV}: its first certificate is not the certificate of "
                    f"${SIGNING_KEY_ENV}'s key; put that key's certificate first, or set the "
                    "key it certifies"
                )
            try:  # what every server checks: refuse to sign what they would refuse
                _check_signing_certificate(certs[0], datetime.now(UTC))
            except ValueError as e:
                raise ConfigError(f"${SIGNING_CERTIFICATE_ENV}: {e}") from None

    def trust_root(self) -> TrustRoot:
        """What verifies this signer's bundles (key and certificate signers)."""
        from cryptography.hazmat.primitives import serialization

        if self.method == "certificate":
            from cryptography import x509

            leaf = x509.load_pem_x509_certificates(self.certificate or b"")[0]
            names = certificate_identities(leaf)
            return TrustRoot("certificate", self.certificate or b"", identity=names[0])
        public = load_private_key(self.private_key or b"").public_key()
        pem = public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return TrustRoot("key", pem)

    def describe(self) -> str:
        if self.method == "sigstore":
            return "Sigstore (keyless, the CI job's OIDC identity)"
        key = load_private_key(self.private_key or b"")
        return f"{self.method} {key_id(key.public_key())[:16]}"

    def _config(self, tmp: Path) -> Any:
        from model_signing import hashing, signing

        hashing_config = hashing.Config().use_file_serialization(hashing_algorithm=HASH_ALGORITHM)
        config = signing.Config().set_hashing_config(hashing_config)
        if self.method == "sigstore":
            # ambient credentials: GitHub Actions' OIDC token (the job's `id-token: write`)
            return config.use_sigstore_signer(use_ambient_credentials=True)
        key_file = tmp / "key.pem"
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(self.private_key or b"")
        if self.method == "key":
            return config.use_elliptic_key_signer(private_key=key_file)
        from cryptography import x509

        certs = x509.load_pem_x509_certificates(self.certificate or b"")
        leaf, chain = tmp / "cert.pem", tmp / "chain.pem"
        leaf.write_bytes(_pem(certs[:1]))
        chain.write_bytes(_pem(certs[1:]))
        return config.use_certificate_signer(
            private_key=key_file,
            signing_certificate=leaf,
            certificate_chain=[chain],
        )

    def sign(self, release_dir: Path, manifest: Manifest) -> bytes:
        """The bundle (`model.sig`) over exactly the release's files: `manifest.json` and every
        file it lists (nothing else the build directory may hold).

        Raises:
            ConfigError: the key or certificate cannot sign.
            ReleaseError: signing failed (keyless: no OIDC token, Fulcio or Rekor unreachable).
        """

        def fill(view: Path) -> None:
            for name in release_files(manifest):
                _link_or_copy(Path(release_dir) / name, view / name)

        # the bundle's subject name
        return self._bundle(f"{manifest.model}-{manifest.version}", fill, "")

    def sign_blob(self, name: str, data: bytes, subject: str) -> bytes:
        """A bundle over a one-file release: `name` holding `data` (the model index,
        pipeline/index.py), made exactly as `sign` makes `model.sig`, so one trust root checks both.

        Raises:
            ConfigError: the key or certificate cannot sign.
            RemoteError: keyless signing failed (no OIDC token, Sigstore unreachable).
        """
        return self._bundle(subject, lambda view: (view / name).write_bytes(data), f" of {name}")

    def _bundle(self, subject: str, fill: Any, of: str) -> bytes:
        """Sign the files `fill(view)` writes into a directory named `subject`."""
        with tempfile.TemporaryDirectory(prefix="release-sign-") as tmp_s:
            tmp = Path(tmp_s)
            secret = tmp / "secret"
            secret.mkdir(mode=0o700)
            view = tmp / subject
            view.mkdir()
            fill(view)
            out = tmp / SIGNATURE_NAME
            try:
                self._config(secret).sign(view, out)
            except Exception as e:
                why = f"{type(e).__name__}: {first_line(e, type(e).__name__)}"
                if self.method != "sigstore":
                    given = f"${SIGNING_KEY_ENV}" + (
                        f" and ${SIGNING_CERTIFICATE_ENV}" if self.method == "certificate" else ""
                    )
                    raise ConfigError(
                        f"{self.method} signing{of} failed: {why}; check {given}"
                    ) from None
                raise RemoteError(
                    f"Sigstore keyless signing{of} failed: {why}; it needs an OIDC token (GitHub "
                    "Actions: `permissions: id-token: write`) and Fulcio and Rekor (the internet)"
                ) from None
            return out.read_bytes()


def _pem(certs: list[Any]) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def _link_or_copy(src: Path, dst: Path) -> None:
    import shutil

    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)
