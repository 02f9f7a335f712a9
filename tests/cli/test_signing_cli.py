"""`release keygen` and `release verify` with a key or a certificate chain; model-signing's own
command line accepts the same release."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipeline import signing
from pipeline.cli import cli
from pipeline.manifest import MANIFEST_NAME, SIGNATURE_NAME
from tests.conftest import KEY, make_release_dir, sign_dir
from tests.pki import make_pki


def run(*args: str, env: dict[str, str] | None = None):  # noqa: ANN201
    return CliRunner().invoke(cli, list(args), catch_exceptions=False, env=env)


def test_keygen_writes_a_private_file_and_prints_the_public_key(tmp_path: Path) -> None:
    r = run("keygen", "--out", str(tmp_path / "keys"))
    assert r.exit_code == 0
    public = r.stdout
    private = tmp_path / "keys" / "release-signing-key.pem"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert (tmp_path / "keys" / "release-signing-key.pub").read_text() == public
    key = signing.load_private_key(private.read_text())
    assert signing.load_public_key(public.encode()).public_numbers() == (
        key.public_key().public_numbers()
    )
    assert "PRIVATE KEY" not in r.stdout and public.startswith("-----BEGIN PUBLIC KEY-----")
    before = private.read_text()
    again = run("keygen", "--out", str(tmp_path / "keys"))
    assert again.exit_code == 2 and "--force" in again.output
    assert private.read_text() == before  # untouched
    assert run("keygen", "--out", str(tmp_path / "keys"), "--force").exit_code == 0


def signed_release(tmp_path: Path) -> Path:
    d = tmp_path / "release"
    sign_dir(d, make_release_dir(d))
    return d


def test_verify_checks_the_signature_and_every_file(tmp_path: Path) -> None:
    d = signed_release(tmp_path)
    key_file = tmp_path / "release.pub"
    key_file.write_text(KEY.public_pem)
    r = run("verify", str(d), "--public-key", str(key_file))
    assert r.exit_code == 0 and "signed by key" in r.output
    assert run("verify", str(d), "--public-key", KEY.public_pem).exit_code == 0
    r = run("verify", str(d), "--public-key", signing.generate().public_pem)
    assert r.exit_code == 5 and "key mismatch" in r.output
    # model-signing's own command line accepts the release as published
    proc = subprocess.run(
        [sys.executable, "-c", "from model_signing._cli import main; main()", "verify", "key",
         str(d), "--signature", str(d / SIGNATURE_NAME), "--public_key", str(key_file)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0 and "Verification succeeded" in proc.stdout, proc.stderr


def test_a_tampered_manifest_fails_even_when_the_files_match_it(tmp_path: Path) -> None:
    d = signed_release(tmp_path)
    m = d / MANIFEST_NAME
    m.write_text(m.read_text().replace('"a"', '"z"', 1))  # a label changed, files still match
    assert run("verify", str(d)).exit_code == 0  # without a trust root, only the files
    r = run("verify", str(d), "--public-key", KEY.public_pem)
    assert r.exit_code == 5 and "the manifest was altered" in r.output


def test_a_missing_signature_fails_when_a_key_is_given(tmp_path: Path) -> None:
    d = signed_release(tmp_path)
    (d / SIGNATURE_NAME).unlink()
    r = run("verify", str(d), "--public-key", KEY.public_pem)
    assert r.exit_code == 5 and "model.sig: missing" in r.output


def test_empty_or_bad_trust_values_are_configuration_errors(tmp_path: Path) -> None:
    d = signed_release(tmp_path)
    assert run("verify", str(d), "--public-key", "not-a-key").exit_code == 3
    r = run("verify", str(d), "--public-key", "")
    assert r.exit_code == 3 and "empty" in r.output
    # e.g. RELEASE_VERIFY_PUBLIC_KEY="$(cat missing.pub)": never "no check"
    r = run("verify", str(d), env={"RELEASE_VERIFY_PUBLIC_KEY": ""})
    assert r.exit_code == 3 and "$RELEASE_VERIFY_PUBLIC_KEY: set but empty" in r.output
    r = run("verify", str(d), "--certificate-chain", " ")
    assert r.exit_code == 3


def test_verify_with_a_certificate_chain(tmp_path: Path) -> None:
    d = tmp_path / "release"
    m = make_release_dir(d)
    pki = make_pki()
    (d / SIGNATURE_NAME).write_bytes(
        signing.Signer("certificate", pki.key_pem, pki.cert_pem + pki.root_pem).sign(d, m)
    )
    root = tmp_path / "root.pem"
    root.write_bytes(pki.root_pem)
    r = run("verify", str(d), "--certificate-chain", str(root), "--identity", pki.identity)
    assert r.exit_code == 0 and "a certificate of your PKI" in r.output
    other = tmp_path / "other.pem"
    other.write_bytes(make_pki().root_pem)
    r = run("verify", str(d), "--certificate-chain", str(other), "--identity", pki.identity)
    assert r.exit_code == 5
    proc = subprocess.run(
        [sys.executable, "-c", "from model_signing._cli import main; main()", "verify",
         "certificate", str(d), "--signature", str(d / SIGNATURE_NAME),
         "--certificate_chain", str(root)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("changed", ["report.md", MANIFEST_NAME])
def test_a_changed_file_fails_verification(tmp_path: Path, changed: str) -> None:
    d = signed_release(tmp_path)
    with open(d / changed, "a") as f:
        f.write(" ")
    r = run("verify", str(d), "--public-key", KEY.public_pem)
    assert r.exit_code == 5
