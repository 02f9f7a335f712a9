"""A throwaway PKI for the signing tests: a root CA and the certificates it issues (cryptography):
code-signing certificates for an identity, and what an attacker may hold from the same CA (a
TLS server certificate, a certificate for another identity, an expired or not-yet-valid one)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier

IDENTITY = "https://ci.example.test/release-signer"  # the default signer's SAN (a URI)
CODE_SIGNING = (ExtendedKeyUsageOID.CODE_SIGNING,)
TLS_SERVER = (ExtendedKeyUsageOID.SERVER_AUTH,)


@dataclass(frozen=True)
class Pki:
    root_pem: bytes  # what servers configure as --certificate-chain
    key_pem: bytes  # the signer's private key
    cert_pem: bytes  # its certificate (then nothing: issued by the root directly)
    identity: str = IDENTITY  # its SAN URI, what servers configure as --identity
    subject: str = ""  # its subject, RFC 4514 (e.g. "CN=release signer")


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


class Ca:
    """A root CA valid from a year ago to a year ahead."""

    def __init__(self) -> None:
        now = datetime.now(UTC)
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(_name("test root"))
            .issuer_name(_name("test root"))
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=365))
            .not_valid_after(now + timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                critical=True,
            )
            .sign(self.key, hashes.SHA256())
        )
        self.root_pem = self.cert.public_bytes(serialization.Encoding.PEM)

    def issue(
        self,
        name: str = "release signer",
        *,
        identity: str | None = IDENTITY,
        may_sign: bool = True,
        eku: Sequence[ObjectIdentifier] | None = CODE_SIGNING,
        valid_from: timedelta = timedelta(minutes=-5),
        valid_for: timedelta = timedelta(days=30),
    ) -> Pki:
        """A leaf for `name` (subject CN), with `identity` as its SAN URI (None: no SAN), the
        extended key usages `eku` (None: no such extension), valid from now + `valid_from`."""
        key = ec.generate_private_key(ec.SECP256R1())
        start = datetime.now(UTC) + valid_from
        usage = x509.KeyUsage(
            may_sign, False, not may_sign, False, False, False, False, False, False
        )
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(start + valid_for)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(usage, critical=True)
        )
        if eku is not None:
            builder = builder.add_extension(x509.ExtendedKeyUsage(list(eku)), critical=False)
        if identity is not None:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.UniformResourceIdentifier(identity)]),
                critical=False,
            )
        cert = builder.sign(self.key, hashes.SHA256())
        pem = serialization.Encoding.PEM
        return Pki(
            self.root_pem,
            key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
            cert.public_bytes(pem),
            identity or "",
            cert.subject.rfc4514_string(),
        )


def make_pki(name: str = "release signer", **issue: object) -> Pki:
    """A new root CA and one leaf it issued (see Ca.issue for the options)."""
    return Ca().issue(name, **issue)  # type: ignore[arg-type]
