"""`release keygen` and `release verify --public-key`."""

from __future__ import annotations

import stat
from pathlib import Path

from click.testing import CliRunner

from pipeline import signing
from pipeline.cli import cli
from pipeline.manifest import MANIFEST_NAME, SIGNATURE_NAME
from tests.conftest import make_release_dir


def run(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_keygen_writes_a_private_file_and_prints_the_public_key(tmp_path: Path) -> None:
    r = run("keygen", "--out", str(tmp_path / "keys"))
    assert r.exit_code == 0
    public = r.stdout.strip()
    private = tmp_path / "keys" / "release-signing-key.pem"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert (tmp_path / "keys" / "release-signing-key.pub").read_text().strip() == public
    key = signing.load_private_key(private.read_text())
    assert signing.public_key_b64(key.public_key()) == public
    assert "PRIVATE KEY" not in r.stdout
    before = private.read_text()
    again = run("keygen", "--out", str(tmp_path / "keys"))
    assert again.exit_code == 2 and "--force" in again.output
    assert private.read_text() == before  # untouched
    assert run("keygen", "--out", str(tmp_path / "keys"), "--force").exit_code == 0


def signed_release(tmp_path: Path) -> tuple[Path, signing.KeyPair]:
    d = tmp_path / "release"
    make_release_dir(d)
    pair = signing.generate()
    key = signing.load_private_key(pair.private_pem)
    (d / SIGNATURE_NAME).write_bytes(signing.sign((d / MANIFEST_NAME).read_bytes(), key))
    return d, pair


def test_verify_checks_the_signature(tmp_path: Path) -> None:
    d, pair = signed_release(tmp_path)
    r = run("verify", str(d), "--public-key", pair.public_b64)
    assert r.exit_code == 0 and f"signed by {pair.public_b64}" in r.output
    key_file = tmp_path / "pub.txt"
    key_file.write_text(pair.public_b64 + "\n")
    assert run("verify", str(d), "--public-key", str(key_file)).exit_code == 0

    other = signing.generate().public_b64
    r = run("verify", str(d), "--public-key", other)
    assert r.exit_code == 5 and "signed with another key" in r.output


def test_a_tampered_manifest_fails_even_when_the_files_match_it(tmp_path: Path) -> None:
    d, pair = signed_release(tmp_path)
    m = d / MANIFEST_NAME
    m.write_text(m.read_text().replace('"a"', '"z"', 1))  # a label changed, files still match
    assert run("verify", str(d)).exit_code == 0  # without a key, only the files are checked
    r = run("verify", str(d), "--public-key", pair.public_b64)
    assert r.exit_code == 5 and "the signature does not match manifest.json" in r.output


def test_a_missing_signature_fails_when_a_key_is_given(tmp_path: Path) -> None:
    d, pair = signed_release(tmp_path)
    (d / SIGNATURE_NAME).unlink()
    r = run("verify", str(d), "--public-key", pair.public_b64)
    assert r.exit_code == 5 and "manifest.json.sig: missing" in r.output


def test_a_bad_public_key_is_a_config_error(tmp_path: Path) -> None:
    d, _ = signed_release(tmp_path)
    r = run("verify", str(d), "--public-key", "not-a-key")
    assert r.exit_code == 3
