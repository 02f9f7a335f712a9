"""Issue 11, findings 1-3, against a hostile mirror on 127.0.0.1 (tests/mirror_server.py): who
may make a server unpickle, empty trust settings, rollback and freeze. No torch here (the
unpickling itself, and finding 4, are in test_client_load.py)."""

from __future__ import annotations

import dataclasses
import json
import logging
import random
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipeline import manifest as mf
from pipeline.checksums import blake3_bytes
from pipeline.cli import cli
from pipeline.client import Client, Http, LocalSource, MirrorSource, Untrusted
from pipeline.errors import ConfigError, IntegrityError
from pipeline.publishers.local import LocalStore
from tests.conftest import KEY, make_release_dir, manifest_pin, sign_dir
from tests.mirror_server import Fault, MirrorServer


def release(
    root: Path, tmp: Path, version: str, *, onnx: bool = False, created: str = ""
) -> mf.Manifest:
    """A signed fake release of `m` (with a fake onnx variant when asked) in the store `root`."""
    d = tmp / f"build-{version}"
    m = make_release_dir(d, "m", version, payload=version.encode())
    files = list(m.files)
    if onnx:
        rng = random.Random(version)
        (d / mf.ONNX_FILE).write_bytes(rng.randbytes(3000))
        (d / mf.TOKENIZER_FILE).write_text('{"format": "fake"}\n')
        files += [
            mf.file_entry(d / mf.ONNX_FILE, "onnx"),
            mf.file_entry(d / mf.TOKENIZER_FILE, "onnx", kind="tokenizer"),
        ]
    m = dataclasses.replace(m, files=tuple(files), created=created or m.created)
    m.write(d)
    sign_dir(d, m)
    LocalStore(root).publish(d, m)
    return m


def mirror(server: MirrorServer) -> MirrorSource:
    return MirrorSource(server.url, http=Http(progress=False))  # no request here is retried


def hostile_manifest(root: Path, version: str, pickle_bytes: bytes) -> bytes:
    """What a hostile mirror serves: the release's manifest listing its own pickle."""
    m = mf.Manifest.read(root / "m" / version)
    entry = mf.FileEntry(
        mf.QUANTIZED_FILE, len(pickle_bytes), blake3_bytes(pickle_bytes), "quantized"
    )
    files = tuple(entry if f.name == mf.QUANTIZED_FILE else f for f in m.files)
    return dataclasses.replace(m, files=files).to_json().encode()


EVIL = b"cos\nsystem\n(S'true'\ntR."  # a pickle that runs a command (never loaded here)


@pytest.fixture
def store(tmp_path: Path) -> Path:
    root = tmp_path / "store"
    release(root, tmp_path, "1.0.0", onnx=True)
    return root


# -- finding 1: a remote pickle only with an authenticated manifest ------------------------------


def test_a_hostile_mirrors_pickle_is_refused_without_trust(tmp_path: Path, store) -> None:
    q = f"/m/1.0.0/{mf.QUANTIZED_FILE}"
    with MirrorServer(store) as server:
        server.always("/m/1.0.0/manifest.json", Fault.body(hostile_manifest(store, "1.0.0", EVIL)))
        server.always(q, Fault.body(EVIL))
        # the command line, default trust (none): exit 5, and how to configure trust
        out = CliRunner().invoke(
            cli,
            ["fetch", "m", "-s", server.url, "--variant", "quantized", "--load",
             "--cache-dir", str(tmp_path / "c")],
        )  # fmt: skip
        assert out.exit_code == 5, out.output
        assert "refusing the quantized variant, a pickle that runs code" in out.output
        assert "--public-key" in out.output and "--pin" in out.output
        assert "--allow-unverified" in out.output
        assert server.count(q) == 0  # not even downloaded
        # a library caller: the same refusal, a typed error
        client = Client([mirror(server)], cache_dir=tmp_path / "c")
        with pytest.raises(Untrusted):
            client.load_model("m", variants=["quantized", "original"])
        # with onnx allowed, the variant that executes nothing is used (verified, not loaded here)
        r = client.fetch("m", variants=["quantized", "original", "onnx"])
        assert r.variant == "onnx" and not r.authenticated
        assert [s.split(":")[0] for s in r.skipped] == ["quantized", "original"]
        # a trust root: the rewritten manifest no longer matches the signed one
        trusted = Client([mirror(server)], cache_dir=tmp_path / "c2", public_key=KEY.public_pem)
        with pytest.raises(IntegrityError, match="the manifest was altered"):
            trusted.fetch("m", variants=["quantized"])
        assert server.count(q) == 0


def test_allow_unverified_fetches_the_remote_pickle_and_a_local_store_is_integrity_only(
    tmp_path: Path, store, caplog
) -> None:
    with MirrorServer(store) as server:
        r = Client([mirror(server)], cache_dir=tmp_path / "c", allow_unverified=True).fetch("m")
        assert r.variant == "quantized" and r.unverified
    with caplog.at_level(logging.INFO, logger="pipeline"):
        for _ in range(2):
            r = Client([LocalSource(store)], cache_dir=tmp_path / "d").fetch("m")
            assert r.variant == "quantized" and r.local and not r.unverified
    said = [r for r in caplog.records if "integrity only" in r.getMessage()]
    assert len(said) == 1 and said[0].levelno == logging.INFO  # once, at INFO


def test_signed_or_pinned_remote_pickles_are_used(tmp_path: Path, store) -> None:
    with MirrorServer(store) as server:
        r = Client([mirror(server)], cache_dir=tmp_path / "c", public_key=KEY.public_pem).fetch("m")
        assert r.variant == "quantized" and r.authenticated.startswith("signed by key")
        pin = manifest_pin(store / "m" / "1.0.0")
        r = Client([mirror(server)], cache_dir=tmp_path / "d", pin=pin).fetch("m")
        assert r.variant == "quantized" and r.authenticated.startswith("pinned")


# -- finding 2: empty values are configuration errors ---------------------------------------------


def test_empty_key_pin_or_identity_is_exit_3_and_contacts_nothing(tmp_path: Path, store) -> None:
    with MirrorServer(store) as server:
        base = ["fetch", "m", "-s", server.url, "--cache-dir", str(tmp_path / "c")]
        for extra, env in (
            (["--public-key", ""], {}),
            (["--pin", " "], {}),
            (["--identity", ""], {}),
            (["--certificate-chain", ""], {}),
            ([], {"RELEASE_FETCH_PUBLIC_KEY": ""}),  # e.g. "$(cat missing.pub)"
            ([], {"RELEASE_PUBLIC_KEY": ""}),
            ([], {"RELEASE_PIN": "  "}),
        ):
            out = CliRunner().invoke(cli, base + extra, env=env)
            assert out.exit_code == 3, (extra, env, out.output)
            assert "empty" in out.output
        assert server.hits == []
    with pytest.raises(ConfigError, match="RELEASE_IDENTITY: set but empty"):
        Client.from_env({"RELEASE_IDENTITY": ""})


# -- finding 3: no rollback, no freeze ------------------------------------------------------------


def test_latest_never_rolls_back_below_what_the_cache_verified(tmp_path: Path, caplog) -> None:
    root = tmp_path / "store"
    release(root, tmp_path, "1.0.0")
    release(root, tmp_path, "1.1.0")
    cache = tmp_path / "c"
    with MirrorServer(root) as server, MirrorServer(root) as honest:
        client = Client([mirror(server)], cache_dir=cache, public_key=KEY.public_pem)
        assert client.fetch("m").manifest.version == "1.1.0"
        # the mirror rewrites `latest` to an older, validly signed release
        server.always("/m/latest", Fault.body(b"1.0.0\n"))
        with caplog.at_level(logging.WARNING, logger="pipeline"):
            r = client.fetch("m")
        assert r.manifest.version == "1.1.0" and r.cache_hit  # kept, not rolled back
        assert "refusing to roll back" in caplog.text and "keeping 1.1.0" in caplog.text
        assert server.count(f"/m/1.0.0/{mf.QUANTIZED_FILE}") == 0
        # an honest source after it: taken; a pinned version: the caller's choice
        both = Client([mirror(server), mirror(honest)], cache_dir=cache, public_key=KEY.public_pem)
        assert both.fetch("m").manifest_source == f"mirror:{honest.url}"
        assert client.fetch("m", "1.0.0").manifest.version == "1.0.0"
        # the pointer never decides: a signed manifest of 1.0.0 served as 1.1.0 is refused
        server.clear()
        server.always(
            "/m/1.1.0/manifest.json", Fault.body((root / "m/1.0.0/manifest.json").read_bytes())
        )
        server.always("/m/1.1.0/model.sig", Fault.body((root / "m/1.0.0/model.sig").read_bytes()))
        fresh = Client([mirror(server)], cache_dir=tmp_path / "e", public_key=KEY.public_pem)
        with pytest.raises(IntegrityError, match="describes m 1.0.0, expected m 1.1.0"):
            fresh.fetch("m")


def test_freeze_a_newest_manifest_older_than_the_maximum_age_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "store"
    release(root, tmp_path, "1.0.0", created="2026-01-01T00:00:00Z")
    with MirrorServer(root) as server:
        client = Client(
            [mirror(server)], cache_dir=tmp_path / "c", public_key=KEY.public_pem, max_age_days=30
        )
        with pytest.raises(IntegrityError, match="more than the maximum age of 30.0 days"):
            client.fetch("m")
        assert client.fetch("m", "1.0.0").manifest.version == "1.0.0"  # pinned: the caller's call
        out = CliRunner().invoke(
            cli,
            ["fetch", "m", "-s", server.url, "--cache-dir", str(tmp_path / "d"),
             "--max-age-days", "30"],
            env={"RELEASE_PUBLIC_KEY": KEY.public_pem},
        )  # fmt: skip
        assert out.exit_code == 5 and "frozen" in out.output


def test_client_from_env_reads_the_environment_once(tmp_path: Path, store) -> None:
    env = {
        "RELEASE_SOURCES": f"{store}, {tmp_path / 'nowhere'}",
        "RELEASE_CACHE_DIR": str(tmp_path / "c"),
        "RELEASE_PUBLIC_KEY": KEY.public_pem,
        "RELEASE_MAX_AGE_DAYS": "100000",
        "RELEASE_OFFLINE": "0",
    }
    client = Client.from_env(env)
    assert [s.name for s in client.sources] == [f"local:{store}", f"local:{tmp_path / 'nowhere'}"]
    assert client.cache.root == tmp_path / "c" and not client.offline
    assert client.trust.root.kind == "key" and client.trust.max_age == 100000 * 86400
    r = client.fetch("m")
    assert r.authenticated and json.loads(r.manifest.to_json())["version"] == "1.0.0"
    with pytest.raises(ConfigError, match="expected 1/0"):
        Client.from_env({"RELEASE_OFFLINE": "maybe"})
