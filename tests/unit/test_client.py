"""The client against local release stores: no network, no torch."""

from __future__ import annotations

import dataclasses
import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline import manifest as mf
from pipeline import signing
from pipeline.checksums import blake3_bytes
from pipeline.client import (
    Cache,
    EnvironmentMismatch,
    LocalSource,
    Trust,
    Untrusted,
    check_environment,
    fetch,
    parse_source,
)
from pipeline.client.cache import CacheBusy
from pipeline.client.sources import GitHubSource, HfSource, MirrorSource
from pipeline.errors import (
    ArtifactNotFound,
    ConfigError,
    IntegrityError,
    ReleaseError,
)
from pipeline.publishers.local import LocalStore
from tests.conftest import KEY, make_release_dir, manifest_pin, sign_dir
from tests.helpers import installed_python


def publish(
    root: Path, tmp: Path, version: str = "1.0.0", payload: bytes = b"q", signed: bool = False
) -> mf.Manifest:
    d = tmp / f"build-{version}-{payload[:4].hex()}"
    m = make_release_dir(d, "m", version, payload)
    if signed:
        sign_dir(d, m)
    LocalStore(root).publish(d, m)
    return m


@pytest.fixture
def store(tmp_path: Path, release_dir) -> tuple[Path, mf.Manifest]:
    d, m = release_dir
    LocalStore(tmp_path / "store").publish(d, m)
    return tmp_path / "store", m


class Refusing:
    """A source that fails the test if it is asked anything."""

    name = "refusing"

    def latest(self, model):  # noqa: ANN001, ANN201
        raise AssertionError("the source was asked for latest")

    read_bytes = download = latest


def test_fetch_latest_verifies_and_caches(tmp_path: Path, store) -> None:
    root, m = store
    cache = tmp_path / "cache"
    r = fetch("m", sources=[LocalSource(root)], cache_dir=cache)
    assert (r.variant, r.cache_hit, r.source) == ("quantized", False, f"local:{root}")
    assert r.path == cache / "m" / "1.0.0" / mf.QUANTIZED_FILE
    assert mf.check_file(r.path, m.variant("quantized")) is None
    assert mf.Manifest.read(cache / "m" / "1.0.0") == m
    # content-addressed: the installed file is a hard link to its blob
    blob = cache / ".blobs" / m.variant("quantized").blake3
    assert blob.stat().st_ino == r.path.stat().st_ino
    assert not (cache / "m" / "1.0.0" / mf.ORIGINAL_FILE).exists()  # only what was needed
    # a pinned version in the cache needs no source at all, but something must vouch for its
    # manifest: the local store it came from (integrity only), or a pin or a signature
    pin = manifest_pin(root / "m" / "1.0.0")
    again = fetch("m", "1.0.0", sources=[Refusing()], cache_dir=cache, pin=pin)
    assert again.cache_hit and again.source == "cache" and again.path == r.path
    assert fetch("m", "1.0.0", sources=[LocalSource(root)], cache_dir=cache).cache_hit
    with pytest.raises(Untrusted, match="--pin BLAKE3"):
        fetch("m", "1.0.0", sources=[], cache_dir=cache)
    # each variant on request (an image baked with both)
    orig = fetch("m", "1.0.0", sources=[LocalSource(root)], variants=["original"], cache_dir=cache)
    assert orig.path.name == mf.ORIGINAL_FILE and not orig.cache_hit
    assert fetch("m", "1.0.0", sources=[], cache_dir=cache, pin=pin).path == r.path


def test_corrupt_source_is_rejected_and_next_source_used(tmp_path: Path, store) -> None:
    root, m = store
    bad = tmp_path / "bad"
    bad_dir = bad / "m" / "1.0.0"
    bad_dir.mkdir(parents=True)
    for p in (root / "m" / "1.0.0").iterdir():
        bad_dir.joinpath(p.name).write_bytes(p.read_bytes())
    (bad / "m" / "latest").write_text("1.0.0\n")
    data = bytearray((bad_dir / mf.QUANTIZED_FILE).read_bytes())
    data[0] ^= 0xFF
    (bad_dir / mf.QUANTIZED_FILE).write_bytes(bytes(data))
    cache = tmp_path / "cache"
    with pytest.raises(IntegrityError) as e:
        fetch("m", sources=[LocalSource(bad)], variants=["quantized"], cache_dir=cache)
    message = str(e.value)
    expected = m.variant("quantized").blake3
    # the file, the source, what was expected and what was found
    assert f"local:{bad}" in message and mf.QUANTIZED_FILE in message
    assert f"manifest says {expected[:16]}" in message
    assert f"blake3 {blake3_bytes(bytes(data))[:16]}" in message
    assert not list((cache / ".partial").glob("*.part"))
    assert not (cache / "m" / "1.0.0" / mf.QUANTIZED_FILE).exists()
    r = fetch(
        "m", sources=[LocalSource(bad), LocalSource(root)], variants=["quantized"], cache_dir=cache
    )
    assert r.source == f"local:{root}" and r.variant == "quantized"


def test_missing_variant_falls_back(tmp_path: Path, store) -> None:
    root, _ = store
    (root / "m" / "1.0.0" / mf.QUANTIZED_FILE).unlink()
    r = fetch("m", sources=[LocalSource(root)], cache_dir=tmp_path / "c")
    assert r.variant == "original"
    assert len(r.skipped) == 1 and r.skipped[0].startswith("quantized:")


def test_quantized_missing_from_one_source_only_comes_from_the_other(tmp_path: Path, store) -> None:
    root, m = store
    partial = tmp_path / "partial-store"
    LocalStore(partial).publish(root / "m" / "1.0.0", m)
    (partial / "m" / "1.0.0" / mf.QUANTIZED_FILE).unlink()
    r = fetch("m", sources=[LocalSource(partial), LocalSource(root)], cache_dir=tmp_path / "c")
    assert (r.variant, r.source, r.manifest_source) == (
        "quantized",
        f"local:{root}",
        f"local:{partial}",
    )


def test_nothing_anywhere(tmp_path: Path) -> None:
    with pytest.raises(ArtifactNotFound, match="no source could provide"):
        fetch("m", sources=[LocalSource(tmp_path)], cache_dir=tmp_path / "c")


def test_names_that_could_escape_the_cache_are_refused(tmp_path: Path, store) -> None:
    root, _ = store
    (root / "m" / "latest").write_text("../../etc\n")
    with pytest.raises(ReleaseError, match="expected letters, digits"):
        fetch("m", sources=[LocalSource(root)], cache_dir=tmp_path / "c")
    with pytest.raises(ValueError, match="model"):
        fetch("../m", sources=[LocalSource(root)], cache_dir=tmp_path / "c")


def test_signed_manifest_accepted_unsigned_or_badly_signed_refused(tmp_path: Path, store) -> None:
    root, m = store
    cache = tmp_path / "c"
    with pytest.raises(IntegrityError, match="refusing an unsigned manifest"):
        fetch("m", sources=[LocalSource(root)], public_key=KEY.public_pem, cache_dir=cache)
    sign_dir(root / "m" / "1.0.0", m, signing.generate())  # another key
    with pytest.raises(IntegrityError, match="not signed by key .*key mismatch"):
        fetch("m", sources=[LocalSource(root)], public_key=KEY.public_pem, cache_dir=cache)
    assert not (cache / "m").exists()  # nothing was downloaded for an untrusted manifest
    good = tmp_path / "good"
    LocalStore(good).publish(root / "m" / "1.0.0", m)
    sign_dir(good / "m" / "1.0.0", m)
    key_file = tmp_path / "release.pub"
    key_file.write_text(KEY.public_pem)
    r = fetch(
        "m",
        sources=[LocalSource(root), LocalSource(good)],
        public_key=str(key_file),
        cache_dir=cache,
    )
    assert r.manifest_source == f"local:{good}" and r.authenticated.startswith("signed by key")
    assert (cache / "m" / "1.0.0" / mf.SIGNATURE_NAME).is_file()
    # the cached copy is checked again, offline too: another key refuses it
    with pytest.raises(ArtifactNotFound, match="no verified copy"):
        fetch(
            "m",
            "1.0.0",
            sources=[],
            public_key=signing.generate().public_pem,
            cache_dir=cache,
            offline=True,
        )
    # a manifest changed after signing (a label), even with matching files, is refused
    changed = dataclasses.replace(m, labels=("a", "z"))
    changed.write(good / "m" / "1.0.0")
    with pytest.raises(IntegrityError, match="the manifest was altered"):
        fetch("m", sources=[LocalSource(good)], public_key=KEY.public_pem, cache_dir=tmp_path / "d")


def test_pinned_manifest(tmp_path: Path, store) -> None:
    root, _ = store
    digest = mf.blake3_file(root / "m" / "1.0.0" / mf.MANIFEST_NAME)
    r = fetch("m", sources=[LocalSource(root)], pin=digest, cache_dir=tmp_path / "c")
    assert r.variant == "quantized"
    with pytest.raises(IntegrityError, match="not the release you pinned"):
        fetch("m", sources=[LocalSource(root)], pin="0" * 64, cache_dir=tmp_path / "c2")
    with pytest.raises(ConfigError, match="64 hex digits"):
        Trust.from_options(pin="abc")


def test_offline_uses_the_newest_verified_cached_version(
    tmp_path: Path, monkeypatch, caplog
) -> None:
    root, cache = tmp_path / "store", tmp_path / "c"
    publish(root, tmp_path, "1.0.0", b"a", signed=True)
    publish(root, tmp_path, "1.10.0", b"b", signed=True)
    publish(root, tmp_path, "1.9.0", b"c", signed=True)
    for v in ("1.0.0", "1.9.0", "1.10.0"):
        fetch("m", v, sources=[LocalSource(root)], cache_dir=cache, public_key=KEY.public_pem)
    monkeypatch.setenv("RELEASE_OFFLINE", "1")
    with caplog.at_level(logging.INFO, logger="pipeline"):
        r = fetch("m", sources=[Refusing()], cache_dir=cache, public_key=KEY.public_pem)
    assert r.manifest.version == "1.10.0" and r.offline and r.cache_hit
    assert "offline (offline mode requested): using m 1.10.0" in caplog.text
    # a damaged newest version is skipped for the next verified one
    (cache / "m" / "1.10.0" / mf.QUANTIZED_FILE).write_bytes(b"damaged")
    r = fetch("m", sources=[], cache_dir=cache, public_key=KEY.public_pem)
    assert r.manifest.version == "1.9.0"
    with pytest.raises(ArtifactNotFound) as e:
        fetch("other", sources=[Refusing()], cache_dir=cache, public_key=KEY.public_pem)
    assert "release fetch other --version latest --cache-dir" in str(e.value)
    assert "pre-fetch" in str(e.value)


def test_partial_download_is_resumed_and_a_bad_prefix_replaced(tmp_path: Path, store) -> None:
    root, m = store
    entry = m.variant("original")
    data = (root / "m" / "1.0.0" / mf.ORIGINAL_FILE).read_bytes()
    cache = Cache(tmp_path / "c")
    part = cache.part(entry.blake3)
    part.parent.mkdir(parents=True)
    part.write_bytes(data[:300])
    r = fetch("m", sources=[LocalSource(root)], variants=["original"], cache_dir=cache.root)
    assert mf.check_file(r.path, entry) is None and not part.exists()
    # a prefix kept from an earlier run that is wrong: verified, rejected, fetched again whole
    cache2 = Cache(tmp_path / "c2")
    part2 = cache2.part(entry.blake3)
    part2.parent.mkdir(parents=True)
    part2.write_bytes(b"X" * 300)
    r = fetch("m", sources=[LocalSource(root)], variants=["original"], cache_dir=cache2.root)
    assert mf.check_file(r.path, entry) is None


def test_lock_wait_is_bounded(tmp_path: Path, store) -> None:
    root, m = store
    cache = Cache(tmp_path / "c")
    lock_path = cache.root / ".locks" / f"{m.variant('quantized').blake3}.lock"
    lock_path.parent.mkdir(parents=True)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from filelock import FileLock; l = FileLock(sys.argv[1]); "
            "l.acquire(); print('held', flush=True); time.sleep(30)",
            str(lock_path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(CacheBusy, match="another process has held") as e:
            fetch(
                "m",
                sources=[LocalSource(root)],
                variants=["quantized"],
                cache_dir=cache.root,
                lock_timeout=0.3,
            )
        assert e.value.exit_code == 3  # the cache is busy: nothing remote failed
    finally:
        holder.kill()
        holder.wait(timeout=10)
    # the kernel dropped the dead holder's lock: no stale lock to clean up
    r = fetch("m", sources=[LocalSource(root)], cache_dir=cache.root, lock_timeout=5)
    assert r.variant == "quantized"


def test_cache_list_verify_prune(tmp_path: Path) -> None:
    root, cache_dir = tmp_path / "store", tmp_path / "c"
    for v, p in (("1.0.0", b"a"), ("1.1.0", b"b"), ("2.0.0", b"c")):
        publish(root, tmp_path, v, p)
        fetch("m", v, sources=[LocalSource(root)], cache_dir=cache_dir)
    cache = Cache(cache_dir)
    assert cache.versions("m") == ["2.0.0", "1.1.0", "1.0.0"]
    assert cache.verify() == []
    (cache_dir / "m" / "1.1.0" / mf.QUANTIZED_FILE).write_bytes(b"bad")  # breaks the link
    problems = cache.verify()
    assert len(problems) == 1 and "m 1.1.0: export_quantized.pkl: 3 bytes" in problems[0]
    (cache.part("f" * 64)).write_bytes(b"left over")
    planned = cache.prune(keep=1, dry_run=True)
    assert "m 1.1.0" in planned and "m 1.0.0" in planned
    assert cache.versions("m") == ["2.0.0", "1.1.0", "1.0.0"]
    removed = cache.prune(keep=1)
    assert set(removed) >= {"m 1.1.0", "m 1.0.0", f".partial/{'f' * 64}.part"}
    assert cache.versions("m") == ["2.0.0"] and cache.verify() == []
    blobs = sorted(p.name for p in (cache_dir / ".blobs").iterdir())
    assert blobs == [mf.Manifest.read(cache_dir / "m" / "2.0.0").variant("quantized").blake3]


def test_check_environment_names_both_versions() -> None:
    here = {"python": "3.11.7", "torch": "2.13.0", "fastai": "2.8.12", "numpy": "2.1.0"}
    assert check_environment({"torch": "2.13.0+cpu", "fastai": "2.8.12"}, here) == []
    with pytest.raises(
        EnvironmentMismatch, match=r"pickled with torch 2\.4\.1, this server has torch 2\.13\.0"
    ):
        check_environment({"torch": "2.4.1"}, here)
    with pytest.raises(EnvironmentMismatch, match="fastai is not installed"):
        check_environment({"fastai": "2.8.12"}, {"python": "3.11.7"})
    with pytest.raises(EnvironmentMismatch, match="numpy 3.0.0"):
        check_environment({"numpy": "3.0.0"}, here)
    notes = check_environment(
        {"python": "3.11.9", "torch": "2.13.1", "numpy": "1.26.4", "platform": "x"}, here
    )
    assert notes == [
        "python 3.11.9 wrote the model, 3.11.7 is installed",
        "torch 2.13.1 wrote the model, 2.13.0 is installed",
        "numpy 1.26.4 wrote the model, 2.1.0 is installed",
    ]


def test_parse_source_forms(monkeypatch) -> None:
    monkeypatch.setenv("GITHUB_TOKEN", "t0ken")
    monkeypatch.setenv("GITHUB_API_URL", "http://127.0.0.1:9/api/v3")
    gh = parse_source("github:acme/models")
    assert isinstance(gh, GitHubSource) and gh.token == "t0ken" and gh.api_url.endswith("/api/v3")
    assert "t0ken" not in gh.name
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    hf = parse_source("hf:acme/intent")
    assert isinstance(hf, HfSource) and hf.endpoint == "http://127.0.0.1:9"
    assert isinstance(parse_source("https://cdn.example/releases/"), MirrorSource)
    assert isinstance(parse_source("/srv/releases"), LocalSource)
    s3 = parse_source("s3://bucket/team/models")  # boto3 is imported only when it is used
    assert (s3.name, s3.bucket, s3.prefix) == ("s3://bucket/team/models", "bucket", "team/models")
    with pytest.raises(ValueError, match="not a source"):
        parse_source("ftp://bucket/x")
    with pytest.raises(ValueError, match="OWNER/REPO"):
        parse_source("github:acme")


def test_client_imports_no_torch_fastai_click_httpx_or_model_signing() -> None:
    code = (
        "import sys, json, pipeline.client; print(json.dumps([m for m in "
        "('torch', 'fastai', 'click', 'httpx', 'huggingface_hub', 'boto3', 'model_signing',"
        " 'OpenSSL', 'sigstore') if m in sys.modules]))"
    )
    assert json.loads(installed_python(code)) == []


def test_load_refuses_a_breaking_environment_before_downloading(tmp_path: Path, store) -> None:
    from pipeline.client import load_model

    root, m = store
    d = root / "m" / "1.0.0"
    changed = dataclasses.replace(m, environment={"python": "3.11.7", "torch": "1.13.1"})
    changed.write(d)
    with pytest.raises(EnvironmentMismatch, match="pickled with torch 1.13.1"):
        load_model(
            "m",
            sources=[LocalSource(root)],
            variants=["quantized", "original"],
            cache_dir=tmp_path / "c",
        )
    assert not (tmp_path / "c" / ".blobs").exists()  # no model file was fetched for nothing


def test_a_signed_fetch_checks_the_key_without_importing_model_signing(tmp_path: Path) -> None:
    """model-signing's import alone costs a second or two per start: key and certificate bundles
    are checked with cryptography (and pyOpenSSL), the same checks."""
    root = tmp_path / "store"
    publish(root, tmp_path, "1.0.0", signed=True)
    key = tmp_path / "release.pub"
    key.write_text(KEY.public_pem)
    code = (
        "import sys, json\n"
        "from pipeline.client import Client\n"
        "r = Client([sys.argv[1]], public_key=sys.argv[2], cache_dir=sys.argv[3]).fetch('m')\n"
        "print(json.dumps([r.authenticated, 'model_signing' in sys.modules]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(root), str(key), str(tmp_path / "c")],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
    ).stdout
    authenticated, imported = json.loads(out.strip().splitlines()[-1])
    assert authenticated.startswith("signed by key") and imported is False
