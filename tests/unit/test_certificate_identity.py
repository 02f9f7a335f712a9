"""Issue 27, finding 7: certificate mode requires an identity. A certificate chain accepted any
certificate its CA issued (a TLS server certificate, a leaf that expired 300 days ago); now the
signing certificate must be for code signing, valid at verification time, and name the identity
the server configured (--identity, as keyless does). No network, no torch."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipeline import signing
from pipeline.cli import cli
from pipeline.client import Client, LocalSource, Trust
from pipeline.errors import ConfigError, IntegrityError
from pipeline.manifest import SIGNATURE_NAME, Manifest
from pipeline.publishers.local import LocalStore
from tests.conftest import make_release_dir
from tests.pki import IDENTITY, TLS_SERVER, Ca, Pki


@pytest.fixture(scope="module")
def ca() -> Ca:
    return Ca()


def _signed(tmp_path: Path, pki: Pki, name: str = "release") -> tuple[Path, Manifest, bytes]:
    d = tmp_path / name
    m = make_release_dir(d)
    bundle = signing.Signer("certificate", pki.key_pem, pki.cert_pem + pki.root_pem).sign(d, m)
    (d / SIGNATURE_NAME).write_bytes(bundle)
    return d, m, bundle


def _root(ca: Ca, identity: str = IDENTITY) -> signing.TrustRoot:
    return signing.TrustRoot("certificate", ca.root_pem, identity=identity)


def test_the_signers_certificate_for_the_configured_identity_is_accepted(
    tmp_path: Path, ca: Ca
) -> None:
    pki = ca.issue()
    _, _, bundle = _signed(tmp_path, pki)
    assert signing.MANIFEST_NAME in _root(ca).verify(bundle, "model.sig")
    # the subject, RFC 4514, names it too (a PKI whose certificates carry no SAN)
    assert _root(ca, "CN=release signer").verify(bundle, "model.sig")
    no_san = ca.issue("build signer", identity=None)
    _, _, bundle = _signed(tmp_path, no_san, "no-san")
    assert _root(ca, "CN=build signer").verify(bundle, "model.sig")


@pytest.mark.parametrize(
    "issue, problem",
    [
        ({"eku": TLS_SERVER}, "not for code signing (extended key usage: serverAuth"),
        ({"eku": None}, "not for code signing (extended key usage: none"),
        (
            {"valid_from": timedelta(days=-400), "valid_for": timedelta(days=100)},
            "expired on",
        ),
        ({"valid_from": timedelta(days=10)}, "not valid yet (valid from"),
        ({"identity": "https://ci.example.test/someone-else"}, "expected " + IDENTITY),
    ],
    ids=["tls-server", "no-eku", "expired-300-days", "not-yet-valid", "other-identity"],
)
def test_another_certificate_of_the_same_ca_is_refused(
    tmp_path: Path, ca: Ca, issue: dict, problem: str
) -> None:
    attacker = ca.issue(**issue)  # the audit's: any certificate the CA issued
    _, _, bundle = _signed(tmp_path, attacker)
    with pytest.raises(IntegrityError) as e:
        _root(ca).verify(bundle, "model.sig")
    assert problem in str(e.value) and "do not use it" in str(e.value)
    if "valid_from" in issue:  # the dates are in the message
        from cryptography import x509

        cert = x509.load_pem_x509_certificate(attacker.cert_pem)
        start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
        assert f"valid from {start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} UTC" in str(e.value)


def test_the_identity_may_name_the_version(tmp_path: Path, ca: Ca) -> None:
    pki = ca.issue(identity="https://ci.example.test/release/1.0.0")
    _, _, bundle = _signed(tmp_path, pki)
    trust = Trust.from_options(
        certificate_chain=ca.root_pem, identity="https://ci.example.test/release/{version}"
    )
    assert trust.root_for(None, "m", "1.0.0").verify(bundle, "model.sig")
    with pytest.raises(IntegrityError, match="is for .*release/1.0.0, .*expected .*release/2.0.0"):
        trust.root_for(None, "m", "2.0.0").verify(bundle, "model.sig")


def test_a_chain_without_an_identity_is_a_configuration_error(ca: Ca) -> None:
    with pytest.raises(ConfigError, match="certificate chain: give --identity too") as e:
        Trust.from_options(certificate_chain=ca.root_pem)
    assert "subject alternative name" in str(e.value)
    with pytest.raises(ConfigError, match="certificate chain: give --identity too"):
        Client.from_env({"RELEASE_CERTIFICATE_CHAIN": ca.root_pem.decode()})
    with pytest.raises(ConfigError, match="OIDC issuer: applies to Sigstore"):
        Trust.from_options(
            certificate_chain=ca.root_pem, identity=IDENTITY, issuer="https://accounts.example"
        )
    trust = Trust.from_options(certificate_chain=ca.root_pem, identity=IDENTITY)
    assert trust.root.kind == "certificate" and trust.root.identity == IDENTITY
    assert IDENTITY in trust.describe()
    # a Sigstore identity is still one trust root, the chain's identity is not a second one
    with pytest.raises(ConfigError, match="give one trust root"):
        Trust.from_options(certificate_chain=ca.root_pem, identity=IDENTITY, keyless=True)


def test_the_command_line_end_to_end(tmp_path: Path, ca: Ca) -> None:
    good, _, _ = _signed(tmp_path, ca.issue(), "good")
    tls, _, _ = _signed(tmp_path, ca.issue(eku=TLS_SERVER), "tls")
    chain = tmp_path / "ca.pem"
    chain.write_bytes(ca.root_pem)
    stores = {}
    for name, d in (("good", good), ("tls", tls)):
        LocalStore(tmp_path / f"store-{name}").publish(d, Manifest.read(d))
        stores[name] = str(tmp_path / f"store-{name}")

    def run(store: str, *extra: str):  # noqa: ANN202
        args = ["fetch", "m", "-s", store, "--cache-dir", str(tmp_path / f"c-{store[-3:]}")]
        return CliRunner().invoke(cli, [*args, "--certificate-chain", str(chain), *extra])

    out = run(stores["good"])  # what an operator upgrading sees: what to add
    assert out.exit_code == 3 and "give --identity too" in out.output, out.output
    assert "Traceback" not in out.output
    out = run(stores["good"], "--identity", IDENTITY)
    assert out.exit_code == 0, out.output
    out = run(stores["tls"], "--identity", IDENTITY)
    assert out.exit_code == 5 and "not for code signing" in out.output, out.output
    out = CliRunner().invoke(
        cli, ["verify", str(good), "--certificate-chain", str(chain), "--identity", IDENTITY]
    )
    assert out.exit_code == 0 and IDENTITY in out.output
    r = Client([LocalSource(Path(stores["good"]))], cache_dir=tmp_path / "lib",
               certificate_chain=chain, identity=IDENTITY).fetch("m")  # fmt: skip
    assert r.authenticated == f"signed by a certificate of your PKI for {IDENTITY}"


@pytest.mark.parametrize(
    "issue, problem",
    [
        ({"eku": TLS_SERVER}, "not for code signing"),
        ({"valid_from": timedelta(days=-400), "valid_for": timedelta(days=100)}, "expired on"),
    ],
)
def test_publish_refuses_a_certificate_servers_would_refuse(
    ca: Ca, issue: dict, problem: str
) -> None:
    bad = ca.issue(**issue)
    env = {
        "RELEASE_SIGNING_KEY": bad.key_pem.decode(),
        "RELEASE_SIGNING_CERTIFICATE": (bad.cert_pem + bad.root_pem).decode(),
    }
    with pytest.raises(ConfigError, match=problem):
        signing.Signer.from_env(env)
    good = ca.issue()
    signer = signing.Signer.from_env(
        {
            "RELEASE_SIGNING_KEY": good.key_pem.decode(),
            "RELEASE_SIGNING_CERTIFICATE": (good.cert_pem + good.root_pem).decode(),
        }
    )
    assert signer is not None and signer.trust_root().identity == IDENTITY
