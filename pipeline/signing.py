"""Release signatures as OpenSSF Model Signing bundles (the `model-signing` library).

`model.sig` is a Sigstore bundle whose DSSE envelope holds an in-toto statement listing the
sha256 of every file of the release, `manifest.json` included (model-signing's "files"
serialization). It is what `model_signing sign` writes and what `model_signing verify` reads, so
a release downloaded in full verifies with the library's own command line. (The digests are
sha256 although model-signing can hash with blake3: its 1.1.1 command line verifies with sha256
only and reports a blake3 bundle as a hash mismatch. `manifest.json` keeps blake3 for every
file; a server hashes only `manifest.json` with sha256.)

Three ways to sign, one format:

- key: an ECDSA P-256/P-384/P-521 private key (PEM), kept offline by maintainers;
- certificate: that key plus its X.509 certificate (and intermediates) from your own PKI;
- sigstore: keyless, with the OIDC identity of the CI job (GitHub Actions' `id-token: write`),
  a Fulcio certificate and a Rekor entry; no secret at all.

A server verifies the bundle's signature against its trust root (a public key, a certificate
chain and the signer's identity in it, or a Sigstore identity and issuer), then checks
`manifest.json` against the bundle's
digest of it, and every file it fetches against `manifest.json`: it needs none of the other
files. Key and certificate bundles are checked here the way model-signing checks them, with
`cryptography` (and pyOpenSSL for the chain), because importing model-signing costs about a
second per server start; Sigstore bundles with model-signing's own verifier. model-signing itself
is imported only to sign, and to check a Sigstore bundle.

A certificate chain alone is not enough: every certificate the CA issued chains to it (a TLS
server certificate, a colleague's). The signing certificate must also be for code signing
(extended key usage 1.3.6.1.5.5.7.3.3), valid now (its dates are checked at verification time,
not at its own not-before), and name the configured identity: a subject alternative name (URI,
e-mail or DNS name, as Sigstore's identities are) or the whole subject (RFC 4514).

Keyless verification needs Sigstore's trust root (Fulcio's CA, Rekor's and the CT logs' keys).
By default model-signing fetches it over TUF (tuf-repo-cdn.sigstore.dev); a server that cannot
reach it is given the file instead (`trusted_root.json`, what `sigstore` and `cosign` call the
trusted root, or a whole client trust config), checked when configured, before any network.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline.errors import ConfigError, IntegrityError, first_line
from pipeline.manifest import MANIFEST_NAME, SIGNATURE_NAME, Manifest

log = logging.getLogger("pipeline.signing")
SIGNING_KEY_ENV = "RELEASE_SIGNING_KEY"
SIGNING_CERTIFICATE_ENV = "RELEASE_SIGNING_CERTIFICATE"
SIGNING_METHOD_ENV = "RELEASE_SIGNING"
METHODS = ("key", "certificate", "sigstore")
HASH_ALGORITHM = "sha256"  # see the module docstring
GITHUB_ISSUER = "https://token.actions.githubusercontent.com"
RELEASE_WORKFLOW = ".github/workflows/release.yml"
_CURVES = ("secp256r1", "secp384r1", "secp521r1")  # what model-signing accepts
CODE_SIGNING_EKU = "1.3.6.1.5.5.7.3.3"
_TRUSTED_ROOT_TYPE = "application/vnd.dev.sigstore.trustedroot+json;version=0.1"
_TRUST_CONFIG_TYPE = "application/vnd.dev.sigstore.clienttrustconfig.v0.1+json"
_SIGNING_CONFIG_TYPE = "application/vnd.dev.sigstore.signingconfig.v0.2+json"


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
            raise ConfigError(f"{what}: cannot read {value}: {e.strerror}") from None
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
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    data = _text(pem).strip()
    if not data:
        raise ConfigError(f"{what}: empty; expected a PEM EC private key")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"{what}: not a readable PEM private key ({type(e).__name__})") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name not in _CURVES:
        raise ConfigError(
            f"{what}: expected an ECDSA P-256, P-384 or P-521 private key (what OpenSSF Model "
            f"Signing uses), found {type(key).__name__}; make one with `release keygen`"
        )
    return key


def load_public_key(pem: bytes, what: str = "public key") -> Any:
    """An EC public key (PEM) of a curve model-signing supports.

    Raises:
        ConfigError: not such a key.
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"{what}: not a readable PEM public key ({type(e).__name__})") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name not in _CURVES:
        raise ConfigError(
            f"{what}: expected an ECDSA P-256, P-384 or P-521 public key, found {type(key).__name__}"
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


# -- signing ------------------------------------------------------------------------------------


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
                raise ConfigError(f"${SIGNING_CERTIFICATE_ENV}: not PEM certificates") from None
            if len(certs) < 2:
                raise ConfigError(
                    f"${SIGNING_CERTIFICATE_ENV}: holds one certificate; expected the signing "
                    "certificate followed by its chain (intermediates, then the root)"
                )
            if certs[0].public_key() != key.public_key():
                raise ConfigError(
                    f"${SIGNING_CERTIFICATE_ENV}: its first certificate is not the certificate of "
                    f"${SIGNING_KEY_ENV}'s key"
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
        from pipeline.errors import RemoteError

        with tempfile.TemporaryDirectory(prefix="release-sign-") as tmp_s:
            tmp = Path(tmp_s)
            secret = tmp / "secret"
            secret.mkdir(mode=0o700)
            view = tmp / f"{manifest.model}-{manifest.version}"  # the bundle's subject name
            view.mkdir()
            for name in release_files(manifest):
                _link_or_copy(Path(release_dir) / name, view / name)
            out = tmp / SIGNATURE_NAME
            try:
                self._config(secret).sign(view, out)
            except Exception as e:
                if self.method != "sigstore":
                    raise ConfigError(
                        f"{self.method} signing failed: {type(e).__name__}: {first_line(e, type(e).__name__)}"
                    ) from None
                raise RemoteError(
                    f"Sigstore keyless signing failed: {type(e).__name__}: {first_line(e, type(e).__name__)}; it "
                    "needs an OIDC token (GitHub Actions: `permissions: id-token: write`) and "
                    "Fulcio and Rekor (the internet)"
                ) from None
            return out.read_bytes()


def release_files(manifest: Manifest) -> list[str]:
    """The names a release's bundle covers: manifest.json and every file of the manifest."""
    return [MANIFEST_NAME, *(f.name for f in manifest.files)]


def _pem(certs: list[Any]) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def _link_or_copy(src: Path, dst: Path) -> None:
    import shutil

    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


# -- verifying ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrustRoot:
    """What a bundle must be signed by: exactly one of a public key, a certificate chain (the
    roots of your PKI), or a Sigstore identity with its OIDC issuer."""

    kind: str  # "key" | "certificate" | "sigstore"
    material: bytes = b""  # PEM of the public key or of the chain's certificates
    identity: str = (
        ""  # the signing certificate's SAN (URI, e-mail; certificate: also DNS, subject)
    )
    issuer: str = ""  # sigstore: the OIDC issuer
    sigstore_root: bytes = b""  # sigstore: a client trust config (JSON); empty: TUF (network)

    def describe(self) -> str:
        if self.kind == "key":
            return f"key {key_id(load_public_key(self.material))[:16]}"
        if self.kind == "certificate":
            return f"a certificate of your PKI for {self.identity}"
        return f"Sigstore identity {self.identity} ({self.issuer})"

    def verify(self, bundle: bytes, where: str, now: datetime | None = None) -> dict[str, str]:
        """Check the bundle's signature; return the digests it signs, {file name: sha256 hex}.

        No file is hashed here: the caller checks the files it has against the result, so a
        server that fetched one variant verifies it without the others. A key or a certificate
        chain is checked as model-signing 1.1.1's verifiers check it (`_verify_dsse`, with
        `cryptography` and pyOpenSSL, without importing model-signing, whose import alone takes
        about a second); a Sigstore identity by model-signing's own Sigstore verifier.

        `now` is the time a certificate must be valid at (default: now).

        Raises:
            IntegrityError: a malformed bundle, a bad signature, another key, a certificate
                outside the chain, not for code signing, expired or not yet valid, another
                identity or issuer, or digests of another kind.
        """
        verifier = self._sigstore_verifier(where) if self.kind == "sigstore" else None
        try:
            if verifier is not None:
                from model_signing._signing import sign_sigstore

                signed = verifier.verify(sign_sigstore.Signature.read(_Blob(bundle)))  # type: ignore[arg-type]
                pairs = [
                    (str(rd.identifier), rd.digest.algorithm, rd.digest.digest_hex)
                    for rd in signed.resource_descriptors()
                ]
            else:
                pairs = _verify_dsse(bundle, self, now or datetime.now(UTC))
        except ConfigError:
            raise
        except Exception as e:  # ValueError, InvalidSignature, OpenSSL and sigstore errors
            raise IntegrityError(
                f"{where}: not signed by {self.describe()}: {type(e).__name__}: {first_line(e, type(e).__name__)}; "
                "the release was altered, or signed by someone else: do not use it"
            ) from None
        digests: dict[str, str] = {}
        for name, algorithm, digest in pairs:
            if algorithm != HASH_ALGORITHM:
                raise IntegrityError(
                    f"{where}: signs {algorithm} digests, this client reads {HASH_ALGORITHM}"
                )
            digests[name] = digest
        return digests

    def _sigstore_verifier(self, where: str) -> Any:
        """model-signing's Sigstore verifier for this identity (it loads Sigstore's trust root).

        Raises:
            ConfigError: model-signing is not installed.
            RemoteError: Sigstore's trust root (TUF) cannot be loaded: not a signature problem.
        """
        from pipeline.errors import RemoteError

        try:
            from model_signing._signing import sign_sigstore
        except ImportError as e:
            raise ConfigError(
                f"{where}: checking a Sigstore signature needs model-signing ({e.name} is not "
                "installed): pip install 'fastai-release[sigstore]'"
            ) from None
        if self.sigstore_root:  # given by the operator: no network at all
            try:
                return sign_sigstore.Verifier(
                    identity=self.identity,
                    oidc_issuer=self.issuer,
                    trust_config=_Blob(self.sigstore_root),  # type: ignore[arg-type]
                )
            except Exception as e:
                raise ConfigError(
                    f"{where}: the Sigstore trust root given cannot be used ({type(e).__name__}: "
                    f"{first_line(e, type(e).__name__)})"
                ) from None
        try:
            return sign_sigstore.Verifier(identity=self.identity, oidc_issuer=self.issuer)
        except Exception as e:
            raise RemoteError(
                f"{where}: Sigstore's trust root could not be loaded ({type(e).__name__}: "
                f"{first_line(e, type(e).__name__)}); keyless verification needs tuf-repo-cdn.sigstore.dev, or a "
                "trust root cached by an earlier run, or the file: --sigstore-trust-root "
                "trusted_root.json (RELEASE_SIGSTORE_TRUST_ROOT)"
            ) from None


_BUNDLE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
_PAYLOAD_TYPE = "application/vnd.in-toto+json"
_STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
_PREDICATE_TYPE = "https://model_signing/signature/v1.0"


def _b64(value: Any) -> bytes:
    import base64

    if not isinstance(value, str):
        raise ValueError("expected base64 text")
    padded = value + "=" * (-len(value) % 4)
    return base64.b64decode(
        padded, altchars=b"-_" if ("-" in value or "_" in value) else None, validate=True
    )


def _pae(payload: bytes) -> bytes:
    """DSSE's pre-authentication encoding, what the signature covers (DSSE v1.0)."""
    return b"DSSEv1 %d %s %d %s" % (
        len(_PAYLOAD_TYPE),
        _PAYLOAD_TYPE.encode(),
        len(payload),
        payload,
    )


def _ec_hash(public_key: Any) -> Any:
    from cryptography.hazmat.primitives import hashes

    size = public_key.curve.key_size
    return {256: hashes.SHA256(), 384: hashes.SHA384(), 521: hashes.SHA512()}[size]


def _verify_dsse(bundle: bytes, root: TrustRoot, now: datetime) -> list[tuple[str, str, str]]:
    """model-signing 1.1.1's key and certificate verification of a bundle (sign_ec_key,
    sign_certificate, signing.dsse_payload_to_manifest), returning (name, algorithm, digest);
    for a certificate, also its identity, its code-signing usage and its dates at `now`."""
    from cryptography.hazmat.primitives.asymmetric import ec

    data = json.loads(bundle)
    if data.get("mediaType") != _BUNDLE_MEDIA_TYPE:
        raise ValueError(f"media type {data.get('mediaType')!r}, expected {_BUNDLE_MEDIA_TYPE}")
    material = data["verificationMaterial"]
    envelope = data["dsseEnvelope"]
    payload = _b64(envelope["payload"])
    signature = _b64(envelope["signatures"][0]["sig"])
    if root.kind == "key":
        public_key = load_public_key(root.material)
        hint = (material.get("publicKey") or {}).get("hint")
        if hint != key_id(public_key):
            raise ValueError("key mismatch: the bundle was signed with another key")
    else:
        public_key = _verify_certificates(material, root.material, root.identity, now)
    public_key.verify(signature, _pae(payload), ec.ECDSA(_ec_hash(public_key)))
    if envelope.get("payloadType") != _PAYLOAD_TYPE:
        raise ValueError(f"payload type {envelope.get('payloadType')!r}, expected {_PAYLOAD_TYPE}")
    statement = json.loads(payload)
    if statement.get("_type") != _STATEMENT_TYPE:
        raise ValueError(f"statement type {statement.get('_type')!r}, expected {_STATEMENT_TYPE}")
    if statement.get("predicateType") != _PREDICATE_TYPE:
        raise ValueError(
            f"predicate {statement.get('predicateType')!r}, expected {_PREDICATE_TYPE}"
        )
    subjects = statement["subject"]
    if len(subjects) != 1:
        raise ValueError(f"expected one subject, found {len(subjects)}")
    root_digest = hashlib.sha256()
    pairs = []
    for resource in statement["predicate"]["resources"]:
        digest = bytes.fromhex(resource["digest"])
        root_digest.update(digest)
        pairs.append((str(resource["name"]), str(resource["algorithm"]), digest.hex()))
    if root_digest.hexdigest() != subjects[0]["digest"]["sha256"]:
        raise ValueError("the statement is inconsistent: its resources do not hash to its subject")
    return pairs


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


def read_sigstore_trust_root(value: str | bytes | Path, what: str) -> bytes:
    """Sigstore's trust root for keyless verification without network, as a client trust
    config (what model-signing reads): from a `trusted_root.json` (media type
    application/vnd.dev.sigstore.trustedroot+json;version=0.1) or a whole client trust config,
    given as a path or as the JSON text. Checked here: it parses, and holds a Fulcio CA, a
    Rekor key and a CT log key (what every keyless verification needs).

    Raises:
        ConfigError: empty, unreadable, not JSON, another media type, or incomplete.
    """
    data = _text(value) if not isinstance(value, Path) else b""
    if isinstance(value, Path) or not data.lstrip().startswith(b"{"):
        path = Path(value if isinstance(value, Path) else data.decode("utf-8", "replace").strip())
        if not str(path).strip():
            raise ConfigError(f"{what}: empty; give the path of trusted_root.json")
        try:
            data = path.expanduser().read_bytes()
        except OSError as e:
            raise ConfigError(f"{what}: cannot read {path}: {e.strerror}") from None
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError) as e:
        raise ConfigError(f"{what}: not JSON ({e})") from None
    media = doc.get("mediaType") if isinstance(doc, dict) else None
    if media == _TRUSTED_ROOT_TYPE:
        doc = {
            "mediaType": _TRUST_CONFIG_TYPE,
            "trustedRoot": doc,
            "signingConfig": {"mediaType": _SIGNING_CONFIG_TYPE},  # verifying signs nothing
        }
    elif media != _TRUST_CONFIG_TYPE:
        raise ConfigError(
            f"{what}: media type {media!r}; expected Sigstore's trusted root "
            f"({_TRUSTED_ROOT_TYPE}) or a client trust config ({_TRUST_CONFIG_TYPE})"
        )
    config = json.dumps(doc).encode()
    try:
        from sigstore.models import ClientTrustConfig, KeyringPurpose
    except ImportError as e:
        raise ConfigError(
            f"{what}: checking a Sigstore signature needs model-signing ({e.name} is not "
            "installed): pip install 'fastai-release[sigstore]'"
        ) from None
    try:
        root = ClientTrustConfig.from_json(config.decode()).trusted_root
        root.get_fulcio_certs()
        root.rekor_keyring(KeyringPurpose.VERIFY)
        root.ct_keyring(KeyringPurpose.VERIFY)
    except Exception as e:
        raise ConfigError(
            f"{what}: not a usable Sigstore trust root ({type(e).__name__}: {first_line(e, type(e).__name__)}); "
            "it needs a Fulcio certificate authority, a Rekor key and a CT log key"
        ) from None
    return config


def check_manifest(
    digests: dict[str, str], manifest_bytes: bytes, manifest: Manifest, where: str
) -> None:
    """`manifest.json` is the one the bundle signs, and the bundle covers exactly its files.

    Raises:
        IntegrityError: another manifest, or another set of files (a bundle of another release).
    """
    signed = digests.get(MANIFEST_NAME)
    found = hashlib.sha256(manifest_bytes).hexdigest()
    if signed != found:
        raise IntegrityError(
            f"{where}: sha256 {found[:16]}…, the signature says "
            f"{(signed or 'nothing')[:16]}…; the manifest was altered or belongs to another "
            "release: do not use it"
        )
    expected = set(release_files(manifest))
    if set(digests) != expected:
        extra, missing = sorted(set(digests) - expected), sorted(expected - set(digests))
        raise IntegrityError(
            f"{where}: the signature covers other files than the manifest lists "
            f"(only signed: {extra}, unsigned: {missing})"
        )


def verify_release_dir(directory: Path, root: TrustRoot) -> Manifest:
    """Check a release directory's bundle and every file it lists (sha256, as the bundle says).

    Raises:
        IntegrityError: missing or bad signature, or any file differs from what was signed.
    """
    directory = Path(directory)
    sig = directory / SIGNATURE_NAME
    if not sig.is_file():
        raise IntegrityError(
            f"{sig}: missing, and a trust root is given: refusing an unsigned release"
        )
    digests = root.verify(sig.read_bytes(), str(sig))
    manifest_bytes = (directory / MANIFEST_NAME).read_bytes()
    manifest = Manifest.from_json(manifest_bytes, str(directory / MANIFEST_NAME))
    check_manifest(digests, manifest_bytes, manifest, str(directory / MANIFEST_NAME))
    problems = []
    for name, digest in digests.items():
        found = sha256_file(directory / name)
        if found != digest:
            problems.append(f"{name}: sha256 {(found or 'missing')[:16]}…, signed {digest[:16]}…")
    if problems:
        raise IntegrityError(
            f"{directory}: {len(problems)} file(s) differ from what was signed:\n"
            + "\n".join(f"  - {p}" for p in problems)
        )
    return manifest


def sha256_file(path: Path) -> str | None:
    try:
        with open(path, "rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    except OSError:
        return None


def signed_digests_unverified(bundle: bytes) -> dict[str, str]:
    """The digests a bundle lists, WITHOUT checking its signature (only to tell whether a bundle
    the signer made earlier still covers a build).

    Raises:
        ValueError, KeyError: not a bundle of this format.
    """
    statement = json.loads(_b64(json.loads(bundle)["dsseEnvelope"]["payload"]))
    return {str(r["name"]): str(r["digest"]) for r in statement["predicate"]["resources"]}
