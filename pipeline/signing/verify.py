"""Verifying: `TrustRoot.verify` checks a bundle against a public key, a certificate chain and
identity, or a Sigstore identity, and returns the digests it signs; `check_manifest` ties them
to manifest.json; `verify_release_dir` checks a whole directory. Key and certificate bundles are
checked without importing model-signing (see the package docstring)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline.errors import ConfigError, IntegrityError, RemoteError, bullets, first_line
from pipeline.manifest import MANIFEST_NAME, SIGNATURE_NAME, Manifest
from pipeline.signing.certificates import _verify_certificates
from pipeline.signing.keys import (
    HASH_ALGORITHM,
    _b64,
    _Blob,
    _text,
    key_id,
    load_public_key,
    release_files,
)

_TRUSTED_ROOT_TYPE = "application/vnd.dev.sigstore.trustedroot+json;version=0.1"
_TRUST_CONFIG_TYPE = "application/vnd.dev.sigstore.clienttrustconfig.v0.1+json"
_SIGNING_CONFIG_TYPE = "application/vnd.dev.sigstore.signingconfig.v0.2+json"
_BUNDLE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
_PAYLOAD_TYPE = "application/vnd.in-toto+json"
_STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
_PREDICATE_TYPE = "https://model_signing/signature/v1.0"


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
                    f"{where}: signs {algorithm} digests, this client reads {HASH_ALGORITHM}; "
                    "sign the release again with `release publish` (it signs sha256 digests)"
                )
            digests[name] = digest
        return digests

    def _sigstore_verifier(self, where: str) -> Any:
        """model-signing's Sigstore verifier for this identity (it loads Sigstore's trust root).

        Raises:
            ConfigError: model-signing is not installed.
            RemoteError: Sigstore's trust root (TUF) cannot be loaded: not a signature problem.
        """
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
                    f"{first_line(e, type(e).__name__)}); give Sigstore's trusted_root.json (what "
                    "`sigstore` and `cosign` call the trusted root)"
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
        raise ConfigError(f"{what}: not JSON ({e}); give Sigstore's trusted_root.json") from None
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
            f"(only signed: {extra}, unsigned: {missing}): the signature belongs to another "
            "release: do not use it"
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
            f"{sig}: missing, and a trust root is given: refusing an unsigned release; sign it "
            "(`release publish` with $RELEASE_SIGNING_KEY), or check its files without a trust root"
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
            f"{bullets(problems)}\nthe release was altered: do not use it; fetch or copy it again"
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
