"""What a signing certificate must be: for code signing, valid at the time of the check, able
to sign, chained to the configured roots, and naming the configured identity (see the package
docstring). `release publish` checks its own certificate with these before signing; a server
checks the bundle's."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pipeline.errors import ConfigError
from pipeline.signing.keys import _b64

CODE_SIGNING_EKU = "1.3.6.1.5.5.7.3.3"


def _verify_certificates(
    material: dict[str, Any], chain_pem: bytes, identity: str, now: datetime
) -> Any:
    """The signing certificate's public key, once it chains to `chain_pem` at `now`, may sign,
    is for code signing, is valid at `now` and names `identity` (model-signing's
    sign_certificate.Verifier checks only the first two, at the certificate's own not-before)."""
    from cryptography import x509

    try:
        from OpenSSL import crypto
    except ImportError:
        raise ConfigError(
            "checking a certificate chain needs pyOpenSSL: pip install 'fastai-release[pki]'"
        ) from None

    if not identity:  # Trust.from_options refuses this; a TrustRoot built by hand too
        raise ConfigError(
            "certificate chain: no identity to require; give --identity (see `release fetch --help`)"
        )
    certs = [
        x509.load_der_x509_certificate(_b64(c["rawBytes"]))
        for c in material["x509CertificateChain"]["certificates"]
    ]
    leaf = certs[0]
    _check_signing_certificate(leaf, now)  # dates first: the clearest message
    store = crypto.X509Store()
    for cert in x509.load_pem_x509_certificates(chain_pem):
        store.add_cert(crypto.X509.from_cryptography(cert))
    store.set_time(now)
    crypto.X509StoreContext(
        store,
        crypto.X509.from_cryptography(leaf),
        [crypto.X509.from_cryptography(c) for c in certs[1:]],
    ).verify_certificate()
    names = certificate_identities(leaf)
    if identity not in names:
        raise ValueError(
            f"the signing certificate is for {', '.join(names) or 'no identity'}, expected "
            f"{identity}"
        )
    return leaf.public_key()


def certificate_identities(cert: Any) -> list[str]:
    """What `--identity` may name in a certificate: its subject alternative names (URIs,
    e-mail addresses, DNS names), then its subject as an RFC 4514 string (when not empty)."""
    from cryptography import x509

    names: list[str] = []
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        san = None
    if san is not None:
        for kind in (x509.UniformResourceIdentifier, x509.RFC822Name, x509.DNSName):
            names += [str(v) for v in san.get_values_for_type(kind)]
    subject = cert.subject.rfc4514_string()
    return names + ([subject] if subject else [])


def _check_signing_certificate(leaf: Any, now: datetime) -> None:
    """The certificate may sign (key usage), is for code signing (extended key usage) and is
    valid at `now`.

    Raises:
        ValueError: saying which, with the dates or the usages found.
    """
    from cryptography import x509

    start, end = leaf.not_valid_before_utc, leaf.not_valid_after_utc
    when = f"valid from {start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} UTC"
    if now < start:
        raise ValueError(
            f"the signing certificate is not valid yet ({when}, now {now:%Y-%m-%d %H:%M} UTC)"
        )
    if now > end:
        raise ValueError(
            f"the signing certificate expired on {end:%Y-%m-%d %H:%M} UTC ({when}, now "
            f"{now:%Y-%m-%d %H:%M} UTC): sign the release again with a current certificate"
        )
    try:
        if not leaf.extensions.get_extension_for_class(x509.KeyUsage).value.digital_signature:
            raise ValueError("the signing certificate may not sign (key usage)")
    except x509.ExtensionNotFound:
        pass
    try:
        usages = list(leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    except x509.ExtensionNotFound:
        usages = []
    if CODE_SIGNING_EKU not in [u.dotted_string for u in usages]:
        found = ", ".join(getattr(u, "_name", "") or u.dotted_string for u in usages) or "none"
        raise ValueError(
            f"the signing certificate is not for code signing (extended key usage: {found}; "
            f"expected codeSigning, {CODE_SIGNING_EKU})"
        )
