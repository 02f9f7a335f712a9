"""Issue 27, finding 7 (second half): keyless Sigstore verification without network. A server
given Sigstore's trust root as a file (--sigstore-trust-root, RELEASE_SIGSTORE_TRUST_ROOT)
verifies keyless bundles with it and never asks TUF; the file is checked when configured, before
any source is contacted. The bundles are made by a Sigstore instance of our own
(tests/sigstore_fake.py) that the crafted trusted_root.json describes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipeline import signing
from pipeline.cli import cli
from pipeline.client import Client, LocalSource, Trust
from pipeline.errors import ConfigError, IntegrityError
from pipeline.manifest import SIGNATURE_NAME, Manifest
from pipeline.publishers.local import LocalStore
from tests.conftest import KEY, make_release_dir
from tests.mirror_server import MirrorServer
from tests.sigstore_fake import FakeSigstore

IDENTITY = "https://github.com/acme/models/.github/workflows/release.yml@refs/tags/v1.0.0"
ISSUER = signing.GITHUB_ISSUER


@pytest.fixture(scope="module")
def sigstore() -> FakeSigstore:
    return FakeSigstore()


@pytest.fixture
def no_tuf(monkeypatch):  # noqa: ANN201
    """Fail the test if anything asks Sigstore's TUF repository for the trust root."""
    import sigstore.models

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("TUF was asked for Sigstore's trust root")

    monkeypatch.setattr(sigstore.models, "TrustUpdater", refuse)


def _release(tmp: Path, sigstore: FakeSigstore, identity: str = IDENTITY) -> tuple[Path, Manifest]:
    d = tmp / "release"
    m = make_release_dir(d)
    (d / SIGNATURE_NAME).write_bytes(sigstore.sign_release(d, m, identity, ISSUER))
    return d, m


def _root_file(tmp: Path, sigstore: FakeSigstore, name: str = "trusted_root.json") -> Path:
    path = tmp / name
    path.write_text(json.dumps(sigstore.trusted_root()))
    return path


def test_keyless_bundles_verify_offline_with_the_trusted_root_file(
    tmp_path: Path, sigstore: FakeSigstore, no_tuf
) -> None:
    d, m = _release(tmp_path, sigstore)
    root_file = _root_file(tmp_path, sigstore)
    trust = Trust.from_options(identity=IDENTITY, sigstore_trust_root=root_file)
    root = trust.root_for(None, m.model, m.version)
    assert root.sigstore_root  # the file went all the way to the verifier
    digests = root.verify((d / SIGNATURE_NAME).read_bytes(), "model.sig")
    assert set(digests) == {signing.MANIFEST_NAME, *(f.name for f in m.files)}
    # the same through a client and the command line (a local store, so nothing else is asked)
    LocalStore(tmp_path / "store").publish(d, m)
    r = Client(
        [LocalSource(tmp_path / "store")],
        cache_dir=tmp_path / "c",
        identity=IDENTITY,
        sigstore_trust_root=root_file,
    ).fetch("m")
    assert r.authenticated == f"signed by Sigstore identity {IDENTITY} ({ISSUER})"
    out = CliRunner().invoke(
        cli,
        ["verify", str(d), "--identity", IDENTITY, "--sigstore-trust-root", str(root_file)],
    )
    assert out.exit_code == 0 and "signed by Sigstore identity" in out.output, out.output
    env = {"RELEASE_IDENTITY": IDENTITY, "RELEASE_SIGSTORE_TRUST_ROOT": str(root_file)}
    client = Client.from_env(
        env, sources=[LocalSource(tmp_path / "store")], cache_dir=tmp_path / "e"
    )
    assert client.fetch("m").authenticated


def test_what_the_trusted_root_does_not_vouch_for_is_refused(
    tmp_path: Path, sigstore: FakeSigstore, no_tuf
) -> None:
    root_file = _root_file(tmp_path, sigstore)
    other = FakeSigstore("another instance")  # its own CA and logs: not in the file
    cases = {
        "another instance": (_release(tmp_path / "a", other)[0], IDENTITY, ISSUER),
        "another identity": (
            _release(tmp_path / "b", sigstore, IDENTITY.replace("v1.0.0", "v0.9.0"))[0],
            IDENTITY,
            ISSUER,
        ),
        "another issuer": (_release(tmp_path / "c", sigstore)[0], IDENTITY, "https://x.example"),
    }
    for why, (d, identity, issuer) in cases.items():
        trust = Trust.from_options(identity=identity, issuer=issuer, sigstore_trust_root=root_file)
        with pytest.raises(IntegrityError, match="not signed by Sigstore identity"):
            trust.root_for(None, "m", "1.0.0").verify((d / SIGNATURE_NAME).read_bytes(), why)


@pytest.mark.parametrize(
    "content, problem",
    [
        (None, "cannot read"),
        ("{not json", "not JSON"),
        ('{"mediaType": "application/json"}', "media type 'application/json'"),
        ("no-CA", "not a usable Sigstore trust root"),
    ],
    ids=["missing", "malformed", "other-media-type", "no-fulcio-ca"],
)
def test_a_bad_trust_root_file_is_a_clear_error_before_any_network(
    tmp_path: Path, sigstore: FakeSigstore, content: str | None, problem: str
) -> None:
    path = tmp_path / "trusted_root.json"
    if content == "no-CA":
        doc = sigstore.trusted_root()
        doc["certificateAuthorities"] = []
        content = json.dumps(doc)
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError, match=problem):
        Trust.from_options(keyless=True, sigstore_trust_root=path)
    d, m = _release(tmp_path, sigstore)
    with MirrorServer(tmp_path) as server:  # a source that must not be asked anything
        out = CliRunner().invoke(
            cli,
            ["fetch", "m", "-s", server.url, "--cache-dir", str(tmp_path / "c"),
             "--identity", IDENTITY, "--sigstore-trust-root", str(path)],
        )  # fmt: skip
        assert out.exit_code == 3 and problem in out.output, out.output
        assert "Sigstore trust root" in out.output and "Traceback" not in out.output
        assert server.hits == []


def test_the_trust_root_goes_with_sigstore_only_and_real_files_are_read(
    tmp_path: Path, sigstore: FakeSigstore
) -> None:
    root_file = _root_file(tmp_path, sigstore)
    with pytest.raises(ConfigError, match="goes with --keyless or --identity"):
        Trust.from_options(KEY.public_pem, sigstore_trust_root=root_file)
    with pytest.raises(ConfigError, match="empty"):
        Trust.from_options(keyless=True, sigstore_trust_root=" ")
    # Sigstore's own production trusted_root.json (shipped with sigstore-python): its format
    import sigstore as sigstore_package

    store = Path(sigstore_package.__file__).parent / "_store"
    production = next(store.glob("*sigstore.dev/trusted_root.json"))
    trust = Trust.from_options(keyless=True, sigstore_trust_root=production)
    assert json.loads(trust.sigstore_root)["trustedRoot"]["mediaType"].startswith(
        "application/vnd.dev.sigstore.trustedroot"
    )
    # a whole client trust config is taken as it is; JSON text as well as a path
    config = trust.sigstore_root.decode()
    assert Trust.from_options(keyless=True, sigstore_trust_root=config).sigstore_root
