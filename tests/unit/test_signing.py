"""Release signatures: OpenSSF Model Signing bundles made by model-signing, checked by this
client's verifier and by model-signing's own, with a key, a certificate chain, and the Sigstore
identity policy (keyless cannot reach Sigstore from here: its policy is tested, not a round trip)."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from pipeline import signing
from pipeline.client import GitHubSource, Trust
from pipeline.errors import ConfigError, IntegrityError
from pipeline.manifest import MANIFEST_NAME, SIGNATURE_NAME, Manifest
from tests.conftest import KEY, make_release_dir, sign_dir
from tests.pki import make_pki


def their_verify(directory: Path, *, public_key: bytes | None = None, chain: bytes | None = None):  # noqa: ANN201
    """model-signing's own verification of a whole release directory (what its CLI runs)."""
    from model_signing import hashing, verifying

    tmp = directory.parent / f"{directory.name}-trust.pem"
    tmp.write_bytes(public_key or chain or b"")
    config = verifying.Config()
    config = (
        config.use_elliptic_key_verifier(public_key=tmp)
        if public_key
        else config.use_certificate_verifier(certificate_chain=[tmp])
    )
    hashing_config = hashing.Config().use_file_serialization(hashing_algorithm="sha256")
    hashing_config.set_ignored_paths(paths=[SIGNATURE_NAME])
    return config.set_hashing_config(hashing_config).verify(directory, directory / SIGNATURE_NAME)


@pytest.fixture
def release(tmp_path: Path) -> tuple[Path, Manifest]:
    d = tmp_path / "release"
    m = make_release_dir(d)
    (d / "train.key").write_text("a build file that is not part of the release\n")
    return d, m


def test_key_bundle_covers_exactly_the_release_and_both_verifiers_agree(release) -> None:
    d, m = release
    bundle = sign_dir(d, m)
    digests = signing.TrustRoot("key", KEY.public_pem.encode()).verify(bundle, "model.sig")
    assert set(digests) == {MANIFEST_NAME, *(f.name for f in m.files)}  # not train.key
    signing.check_manifest(digests, (d / MANIFEST_NAME).read_bytes(), m, "manifest.json")
    (d / "train.key").unlink()
    their_verify(d, public_key=KEY.public_pem.encode())
    assert signing.verify_release_dir(d, signing.TrustRoot("key", KEY.public_pem.encode())) == m


def _tampered(bundle: bytes, how: str) -> bytes:
    data = json.loads(bundle)
    env = data["dsseEnvelope"]
    if how == "payload":
        payload = base64.b64decode(env["payload"]).replace(b"report.md", b"report.mx")
        env["payload"] = base64.b64encode(payload).decode()
    elif how == "signature":
        sig = bytearray(base64.b64decode(env["signatures"][0]["sig"]))
        sig[-1] ^= 1
        env["signatures"][0]["sig"] = base64.b64encode(bytes(sig)).decode()
    elif how == "hint":
        data["verificationMaterial"]["publicKey"]["hint"] = "0" * 64
    return json.dumps(data).encode()


@pytest.mark.parametrize("how", ["payload", "signature", "hint"])
def test_a_tampered_bundle_is_refused_by_both_verifiers(release, how) -> None:
    d, m = release
    (d / "train.key").unlink()
    bad = _tampered(sign_dir(d, m), how)
    (d / SIGNATURE_NAME).write_bytes(bad)
    with pytest.raises(IntegrityError, match="not signed by key"):
        signing.TrustRoot("key", KEY.public_pem.encode()).verify(bad, "model.sig")
    with pytest.raises(Exception):  # noqa: B017 - the library raises ValueError or InvalidSignature
        their_verify(d, public_key=KEY.public_pem.encode())


def test_another_key_and_a_changed_manifest_are_refused(release) -> None:
    d, m = release
    bundle = sign_dir(d, m)
    other = signing.TrustRoot("key", signing.generate().public_pem.encode())
    with pytest.raises(IntegrityError, match="key mismatch"):
        other.verify(bundle, "model.sig")
    digests = signing.TrustRoot("key", KEY.public_pem.encode()).verify(bundle, "model.sig")
    changed = (d / MANIFEST_NAME).read_bytes().replace(b'"a"', b'"z"', 1)
    with pytest.raises(IntegrityError, match="the manifest was altered"):
        signing.check_manifest(digests, changed, m, "manifest.json")


def test_certificate_chain_of_your_own_pki(release) -> None:
    d, m = release
    (d / "train.key").unlink()
    pki = make_pki()
    signer = signing.Signer("certificate", pki.key_pem, pki.cert_pem + pki.root_pem)
    signer.check()
    bundle = signer.sign(d, m)
    (d / SIGNATURE_NAME).write_bytes(bundle)
    root = signing.TrustRoot("certificate", pki.root_pem, identity=pki.identity)
    assert MANIFEST_NAME in root.verify(bundle, "model.sig")
    their_verify(d, chain=pki.root_pem)
    with pytest.raises(IntegrityError, match="not signed by a certificate of your PKI"):
        other = make_pki()
        signing.TrustRoot("certificate", other.root_pem, identity=other.identity).verify(
            bundle, "model.sig"
        )
    # a certificate that may not sign (key usage) is refused, as model-signing refuses it
    no_sign = make_pki(may_sign=False, eku=None)
    bad = signing.Signer("certificate", no_sign.key_pem, no_sign.cert_pem + no_sign.root_pem)
    bundle = bad.sign(d, m)
    (d / SIGNATURE_NAME).write_bytes(bundle)
    with pytest.raises(IntegrityError, match="may not sign"):
        signing.TrustRoot("certificate", no_sign.root_pem, identity=no_sign.identity).verify(
            bundle, "model.sig"
        )
    with pytest.raises(ValueError, match="cannot be used for signing"):
        their_verify(d, chain=no_sign.root_pem)


def test_signer_settings_are_checked_and_never_echo_the_key() -> None:
    assert signing.Signer.from_env({}) is None
    key = signing.Signer.from_env({"RELEASE_SIGNING_KEY": KEY.private_pem})
    assert key is not None and key.method == "key"
    with pytest.raises(ConfigError, match="expected one of key, certificate, sigstore"):
        signing.Signer.from_env({"RELEASE_SIGNING": "gpg"})
    with pytest.raises(ConfigError, match="needs \\$RELEASE_SIGNING_KEY"):
        signing.Signer.from_env({"RELEASE_SIGNING": "key"})
    secret = "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LXNlY3JldA==\n-----END PRIVATE KEY-----\n"
    with pytest.raises(ConfigError) as e:
        signing.Signer.from_env({"RELEASE_SIGNING_KEY": secret})
    assert "c2VjcmV0" not in str(e.value)
    pki = make_pki()
    with pytest.raises(ConfigError, match="followed by its chain"):
        signing.Signer.from_env(
            {
                "RELEASE_SIGNING_KEY": pki.key_pem.decode(),
                "RELEASE_SIGNING_CERTIFICATE": pki.cert_pem.decode(),
            }
        )
    with pytest.raises(ConfigError, match="not the certificate of"):
        signing.Signer.from_env(
            {
                "RELEASE_SIGNING_KEY": KEY.private_pem,
                "RELEASE_SIGNING_CERTIFICATE": (pki.cert_pem + pki.root_pem).decode(),
            }
        )
    keyless = signing.Signer.from_env({"RELEASE_SIGNING": "sigstore"})
    assert keyless is not None and "keyless" in keyless.describe()


def test_empty_trust_values_are_configuration_errors_never_off() -> None:
    for options in (
        {"public_key": ""},
        {"public_key": "  \n"},
        {"pin": ""},
        {"certificate_chain": b""},
        {"identity": " "},
        {"issuer": ""},
    ):
        with pytest.raises(ConfigError, match="empty"):
            Trust.from_options(**options)
    with pytest.raises(ConfigError, match="give one trust root"):
        Trust.from_options(KEY.public_pem, certificate_chain=make_pki().root_pem)
    with pytest.raises(ConfigError, match="ECDSA"):
        Trust.from_options(
            "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=\n-----END PUBLIC KEY-----\n"
        )  # an Ed25519 key, the old format


# -- keyless (Sigstore): the identity policy ----------------------------------------------------

_ISSUER_V1 = "1.3.6.1.4.1.57264.1.1"  # Fulcio's OIDC issuer extensions: raw (what Identity
_ISSUER_V2 = "1.3.6.1.4.1.57264.1.8"  # checks) and DER UTF8String; Fulcio writes both


def fulcio_like(identity: str, issuer: str):  # noqa: ANN201
    """A certificate shaped like the one Fulcio issues a GitHub Actions job (SAN URI + issuer)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID, ObjectIdentifier

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "sigstore.dev")])
    now = datetime.now(UTC)
    der_utf8 = b"\x0c" + bytes([len(issuer)]) + issuer.encode()
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + timedelta(minutes=10))
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(identity)]), critical=True
        )
        .add_extension(
            x509.UnrecognizedExtension(ObjectIdentifier(_ISSUER_V1), issuer.encode()),
            critical=False,
        )
        .add_extension(
            x509.UnrecognizedExtension(ObjectIdentifier(_ISSUER_V2), der_utf8), critical=False
        )
        .sign(key, hashes.SHA256())
    )


def test_keyless_identity_of_a_github_source_is_its_release_workflow_at_the_tag() -> None:
    from sigstore.verify.policy import Identity

    trust = Trust.from_options(keyless=True)
    source = GitHubSource("acme/models", http=None)
    root = trust.root_for(source, "m", "1.2.0")
    assert root is not None and root.kind == "sigstore"
    assert root.identity == (
        "https://github.com/acme/models/.github/workflows/release.yml@refs/tags/v1.2.0"
    )
    assert root.issuer == "https://token.actions.githubusercontent.com"
    # model-signing's Sigstore verifier checks exactly this policy on the bundle's certificate
    policy = Identity(identity=root.identity, issuer=root.issuer)
    policy.verify(fulcio_like(root.identity, root.issuer))
    refused = {
        "another repository": (
            "https://github.com/evil/models/.github/workflows/release.yml@refs/tags/v1.2.0",
            root.issuer,
        ),
        "another workflow": (
            "https://github.com/acme/models/.github/workflows/ci.yml@refs/tags/v1.2.0",
            root.issuer,
        ),
        "another tag (an older release)": (
            "https://github.com/acme/models/.github/workflows/release.yml@refs/tags/v1.1.0",
            root.issuer,
        ),
        "a branch": (
            "https://github.com/acme/models/.github/workflows/release.yml@refs/heads/main",
            root.issuer,
        ),
        "another issuer": (root.identity, "https://accounts.google.com"),
    }
    for why, (identity, issuer) in refused.items():
        with pytest.raises(Exception, match="[Cc]ertificate|identity|issuer|OIDC"):  # noqa: B017
            policy.verify(fulcio_like(identity, issuer))
        assert why
    # an explicit identity may name the version; keyless needs a github: source or an identity
    explicit = Trust.from_options(identity="https://example.com/ci@refs/tags/v{version}")
    assert explicit.root_for(None, "m", "2.0.0").identity.endswith("@refs/tags/v2.0.0")
    with pytest.raises(ConfigError, match="only for github: sources"):
        trust.root_for(type("Mirror", (), {"name": "mirror:x"})(), "m", "1.0.0")
