"""`release promote`, `yank` (and `--undo`), `reissue`, `status` and `fetch --channel` on a local
store (no network; the other targets are in tests/integration/publishing/test_channels.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipeline import index as ix
from pipeline import signing
from pipeline.cli import cli
from pipeline.publishers.local import LocalStore
from tests.conftest import FIXTURES, KEY, make_release_dir, sign_dir


@pytest.fixture
def project(tmp_path: Path, monkeypatch) -> Path:
    """A config whose local store holds m 1.0.0 and 1.1.0, signed; the signing key set."""
    store = tmp_path / "store"
    for v in ("1.0.0", "1.1.0"):
        d = tmp_path / f"b{v}"
        m = make_release_dir(d, "m", v, payload=v.encode())
        sign_dir(d, m)
        LocalStore(store).publish(d, m)
    config = tmp_path / "release.toml"
    config.write_text(
        (FIXTURES / "tiny.toml").read_text() + f'\n[publish.local]\nroot = "{store}"\n'
    )
    monkeypatch.setenv("RELEASE_SIGNING_KEY", KEY.private_pem)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run(*args: str):
    return CliRunner().invoke(cli, list(args))


def stored(project: Path) -> ix.Index:
    return ix.parse((project / "store" / "m" / "index.json").read_bytes(), "t").index


def test_promote_dry_run_then_apply_then_rerun(project) -> None:
    r = run("promote", "m", "1.0.0", "--channel", "stable", "--dry-run")
    assert r.exit_code == 0, r.output
    assert "channel stable: (none) -> 1.0.0" in r.output
    assert "sequence (none) -> 1" in r.output and "write index.json sequence 1, signed" in r.output
    assert not (project / "store" / "m" / "index.json").exists()

    r = run("promote", "m", "1.0.0", "--channel", "stable")
    assert r.exit_code == 0, r.output
    assert "local: done" in r.output and "index sequence 1" in r.output
    i = stored(project)
    assert dict(i.channels) == {"latest": "1.1.0", "stable": "1.0.0"}

    r = run("promote", "m", "1.0.0", "--channel", "stable")
    assert r.exit_code == 0 and "local: skipped" in r.output and stored(project) == i


def test_yank_needs_a_reason_undo_withdraws_it(project) -> None:
    assert run("yank", "m", "1.1.0").exit_code == 2
    r = run("yank", "m", "1.1.0", "--reason", "mislabels refunds")
    assert r.exit_code == 0, r.output
    assert dict(stored(project).yanked) == {"1.1.0": "mislabels refunds"}
    assert (project / "store" / "m" / "latest").read_text() == "1.0.0\n"  # older clients too
    assert run("yank", "m", "1.1.0", "--undo", "--reason", "x").exit_code == 2
    r = run("yank", "m", "1.1.0", "--undo")
    assert r.exit_code == 0, r.output
    assert dict(stored(project).yanked) == {}
    assert (project / "store" / "m" / "latest").read_text() == "1.1.0\n"


def test_promote_an_unpublished_version_exits_2(project) -> None:
    r = run("promote", "m", "2.0.0", "--channel", "stable")
    assert r.exit_code == 2 and "not published on local" in r.output
    assert run("promote", "m", "1.0.0", "--channel", "Not A Channel").exit_code == 3


def test_status_shows_channels_yanks_and_verification(project) -> None:
    run("promote", "m", "1.0.0", "--channel", "stable")
    run("yank", "m", "1.1.0", "--reason", "slow")
    store = str(project / "store")
    r = run("status", "m", "--source", store, "--public-key", KEY.public_pem)
    assert r.exit_code == 0, r.output
    assert "sequence 2" in r.output and "signed by key" in r.output
    assert "channel latest       1.1.0 (yanked: serves 1.0.0)" in r.output
    assert "1.1.0  YANKED: slow" in r.output
    r = run("status", "m", "--source", store, "--json")
    doc = json.loads(r.stdout)["sources"][0]
    assert doc["serves"] == {"latest": "1.0.0", "stable": "1.0.0"} and doc["signed"] is True
    assert doc["verified"] is None  # no trust root given: not checked
    wrong = signing.generate().public_pem
    r = run("status", "m", "--source", store, "--public-key", wrong)
    assert r.exit_code == 5 and "REFUSED by servers" in r.output


def test_reissue_and_fetch_by_channel(project, monkeypatch) -> None:
    run("promote", "m", "1.0.0", "--channel", "stable")
    r = run("reissue", "m", "--expires-days", "30")
    assert r.exit_code == 0, r.output
    assert stored(project).expires is not None and stored(project).sequence == 2
    cache = str(project / "cache")
    store = str(project / "store")
    args = ["fetch", "m", "--source", store, "--cache-dir", cache, "--variant", "quantized"]
    r = run(*args, "--channel", "stable")
    assert r.exit_code == 0, r.output
    assert "/m/1.0.0/" in r.stdout
    monkeypatch.setenv("RELEASE_CHANNEL", "latest")
    assert "/m/1.1.0/" in run(*args).stdout
