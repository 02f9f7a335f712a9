"""The S3 target and the two ways the client reads a bucket, with real boto3 and httpx over HTTP
against moto's server behind a fault-injecting proxy (tests/emulators/s3.py)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from pipeline import config as cfg
from pipeline import manifest as mf
from pipeline.checksums import blake3_file
from pipeline.client import MirrorSource, fetch, parse_source
from pipeline.client.s3 import S3Source
from pipeline.errors import IntegrityError, ReleaseError, RemoteError, VersionExistsError
from pipeline.publish import publish
from pipeline.publishers.s3 import IMMUTABLE, LATEST_CACHE, S3Publisher
from tests.emulators.s3 import S3Emulator
from tests.integration.publishing.conftest import (
    AWS_ENV,
    BUCKET,
    local_bytes,
    make_build,
    s3_toml,
    write_project,
)

PREFIX = "team/models"
BASE = f"{PREFIX}/tiny-intent/0.0.1/"
PART = r"partNumber="


@pytest.fixture
def project(s3, tmp_path: Path) -> tuple[cfg.ReleaseConfig, mf.Manifest]:
    config = write_project(tmp_path / "project", s3_toml(s3.url))
    return config, make_build(config)


def run(config, policy, **kw):
    return publish(config, ("s3",), policy=policy, **kw)[0]


def version_objects(s3: S3Emulator, base: str = BASE) -> dict[str, bytes]:
    return {k[len(base) :]: v for k, v in s3.objects(BUCKET, base).items()}


def test_first_publish_then_identical_republish_writes_nothing(s3, policy, project) -> None:
    config, _ = project
    r = run(config, policy)
    assert r.state == "done" and r.verified and len(r.uploaded) == 6
    assert version_objects(s3) == local_bytes(config)
    assert s3.objects(BUCKET, f"{PREFIX}/tiny-intent/latest") == {
        f"{PREFIX}/tiny-intent/latest": b"0.0.1\n"
    }
    head = s3.head(BUCKET, BASE + "export.pkl")
    assert head["CacheControl"] == IMMUTABLE
    assert head["Metadata"]["blake3"] == mf.file_entry(config.build_dir / "export.pkl").blake3
    assert s3.head(BUCKET, f"{PREFIX}/tiny-intent/latest")["CacheControl"] == LATEST_CACHE
    first_writes = [(e.method, e.path) for e in s3.writes()]
    assert len(first_writes) == 8  # 6 files + latest + the model index, one request each
    assert first_writes[-1] == ("PUT", f"/{BUCKET}/{PREFIX}/tiny-intent/index.json")
    assert first_writes[-2] == ("PUT", f"/{BUCKET}/{PREFIX}/tiny-intent/latest")
    assert first_writes[-3] == ("PUT", f"/{BUCKET}/{BASE}manifest.json")  # publishes the version

    s3.clear_log()
    r = run(config, policy)
    assert r.state == "skipped" and len(r.skipped) == 6
    assert s3.writes() == []  # zero writes: LIST, HEADs, latest, then every object read back
    gets = [e.path for e in s3.log if e.method == "GET" and e.path.startswith(f"/{BUCKET}/{BASE}")]
    assert sorted(p.rsplit("/", 1)[1] for p in gets) == sorted(local_bytes(config))


def test_large_files_go_multipart_with_sha256_checksums(s3, policy, tmp_path) -> None:
    config = write_project(tmp_path / "p", s3_toml(s3.url))
    make_build(config, big=20 << 20)
    assert run(config, policy).state == "done"
    assert s3.count("PUT", PART, query=True) == 3  # 20 MiB in 8 MiB parts
    assert s3.count("POST", r"\?uploads", query=True) == 1  # create
    assert s3.count("POST", r"uploadId=", query=True) == 1  # complete
    head = s3.client().head_object(Bucket=BUCKET, Key=BASE + "export.pkl", ChecksumMode="ENABLED")
    assert head.get("ChecksumSHA256") and head["ContentLength"] == 20 * (1 << 20) + 1
    assert version_objects(s3) == local_bytes(config)


def test_a_published_version_with_other_files_is_refused_then_forced(
    s3, policy, project, tmp_path
) -> None:
    config, _ = project
    run(config, policy)
    first = local_bytes(config)
    make_build(config, payload=b"z", plot=False)
    s3.clear_log()
    with pytest.raises(VersionExistsError) as e:
        run(config, policy)
    assert e.value.exit_code == 3 and "pass --force to replace the published files" in str(e.value)
    assert "latency.png" in str(e.value) and "manifest.json" in str(e.value)
    assert s3.writes() == [] and version_objects(s3) == first
    plan = run(config, policy, dry_run=True)
    assert plan.refused and s3.writes() == []

    r = run(config, policy, force=True)
    assert r.state == "done"
    assert r.actions[0].startswith(f"delete {BASE}manifest.json first")
    assert version_objects(s3) == local_bytes(config)  # latency.png deleted


def test_leftovers_of_an_unpublished_version_are_replaced_without_force(
    s3, policy, project
) -> None:
    config, _ = project
    c = s3.client()
    c.put_object(Bucket=BUCKET, Key=BASE + "export.pkl", Body=b"half of another build")
    c.put_object(Bucket=BUCKET, Key=BASE + "stray.bin", Body=b"x")
    c.create_multipart_upload(Bucket=BUCKET, Key=BASE + "export_quantized.pkl")
    r = run(config, policy)
    assert r.state == "done"
    assert "abort 1 unfinished multipart upload(s) left by an interrupted run" in r.actions
    assert version_objects(s3) == local_bytes(config)
    assert s3.unfinished_uploads(BUCKET) == []


def test_slow_down_and_resets_are_retried_with_our_backoff(s3, policy, tmp_path) -> None:
    config = write_project(tmp_path / "p", s3_toml(s3.url))
    make_build(config, big=10 << 20)
    s3.slow_down("PUT", r"/manifest\.json$", times=2)
    s3.reset_connection("PUT", PART, after_bytes=1 << 20)
    s3.slow_down("GET", r"/report\.md$", times=1)
    assert run(config, policy).state == "done"
    # manifest PUT: 503 twice (backoff 2, 4); a part reset mid-body: the file again (2);
    # the read-back of report.md: 503 once (2)
    assert sorted(policy.waits) == [2, 2, 2, 4]
    assert version_objects(s3) == local_bytes(config)
    assert s3.unfinished_uploads(BUCKET) == []


def test_a_corrupt_read_back_deletes_the_object_and_publishes_nothing(
    s3, policy, project, monkeypatch
) -> None:
    config, _ = project
    real = S3Publisher._digest
    monkeypatch.setattr(
        S3Publisher,
        "_digest",
        lambda self, key: "0" * 64 if key.endswith("report.json") else real(self, key),
    )
    with pytest.raises(IntegrityError, match="report.json reads back with blake3 0000"):
        run(config, policy)
    there = version_objects(s3)
    assert "report.json" not in there and "manifest.json" not in there  # not published
    monkeypatch.setattr(S3Publisher, "_digest", real)
    assert run(config, policy).state == "done"
    assert version_objects(s3) == local_bytes(config)


def test_latest_never_moves_backwards(s3, policy, tmp_path) -> None:
    for version in ("0.0.2", "0.0.1"):
        text = s3_toml(s3.url)
        config = write_project(tmp_path / version, text)
        path = config.path
        path.write_text(path.read_text().replace('version = "0.0.1"', f'version = "{version}"'))
        config = cfg.load(path)
        make_build(config, payload=version.encode())
        run(config, policy)
    assert (
        s3.objects(BUCKET, f"{PREFIX}/tiny-intent/latest")[f"{PREFIX}/tiny-intent/latest"]
        == b"0.0.2\n"
    )


def test_no_credentials_and_no_bucket_fail_before_any_write(s3, policy, tmp_path, monkeypatch):
    config = write_project(tmp_path / "p", s3_toml(s3.url, bucket="nope"))
    make_build(config)
    with pytest.raises(RemoteError, match="no bucket 'nope'"):
        run(config, policy)
    for k in AWS_ENV:
        monkeypatch.delenv(k)
    with pytest.raises(RemoteError, match="no credentials: set AWS_ACCESS_KEY_ID"):
        run(config, policy)
    assert s3.writes() == []


def test_the_client_reads_the_bucket_as_a_public_mirror_and_as_s3(s3, policy, project, tmp_path):
    config, manifest = project
    run(config, policy)
    quantized = manifest.variant("quantized")
    pin = blake3_file(
        config.build_dir / mf.MANIFEST_NAME
    )  # remote pickles: an authenticated manifest
    mirror = MirrorSource(s3.public_url(BUCKET, PREFIX))
    with pytest.raises(ReleaseError, match="HTTP 403"):  # private: anonymous reads refused
        fetch("tiny-intent", sources=[mirror], cache_dir=tmp_path / "c0", pin=pin)
    s3.make_public(BUCKET)
    s3.clear_log()
    via_mirror = fetch(
        "tiny-intent",
        sources=[MirrorSource(s3.public_url(BUCKET, PREFIX))],
        cache_dir=tmp_path / "c1",
        pin=pin,
    )
    assert mf.check_file(via_mirror.path, quantized) is None
    assert via_mirror.source == f"mirror:{s3.public_url(BUCKET, PREFIX)}"
    assert s3.count("GET", r"/export_quantized\.pkl$") == 1

    source = parse_source(f"s3://{BUCKET}/{PREFIX}")
    assert isinstance(source, S3Source) and source.name == f"s3://{BUCKET}/{PREFIX}"
    source.endpoint_url = s3.url  # as AWS_ENDPOINT_URL_S3 would set it for boto3
    via_s3 = fetch("tiny-intent", "0.0.1", sources=[source], cache_dir=tmp_path / "c2", pin=pin)
    assert mf.check_file(via_s3.path, quantized) is None and via_s3.source == source.name
    assert s3.count("GET", r"/export_quantized\.pkl$") == 2


def test_the_s3_source_resumes_a_download_cut_mid_body(s3, policy, tmp_path) -> None:
    config = write_project(tmp_path / "p", s3_toml(s3.url))
    manifest = make_build(config, big=4 << 20)
    run(config, policy)
    source = S3Source(BUCKET, PREFIX, endpoint_url=s3.url)
    part = tmp_path / "export.pkl.part"
    part.write_bytes((config.build_dir / "export.pkl").read_bytes()[: 1 << 20])  # a killed run's
    s3.clear_log()
    entry = manifest.variant("original")
    source.download("tiny-intent", "0.0.1", "export.pkl", part, entry.size)
    assert mf.check_file(part, entry) is None
    assert [e.received for e in s3.log] == [0]  # one GET, with a Range from 1 MiB
    digest = hashlib.sha256(part.read_bytes()).hexdigest()
    assert digest == hashlib.sha256((config.build_dir / "export.pkl").read_bytes()).hexdigest()


def test_config_problems_are_reported_at_once(tmp_path) -> None:
    from pipeline.errors import ConfigError

    bad = s3_toml("ftp://x", bucket="No_Such", prefix="../up")
    with pytest.raises(ConfigError) as e:
        write_project(tmp_path / "p", bad)
    problems = "\n".join(e.value.problems)
    assert "publish.s3.bucket: expected an S3 bucket name" in problems
    assert "publish.s3.prefix: expected a key prefix" in problems
    assert "publish.s3.endpoint_url: expected an http(s):// URL" in problems
    assert os.environ.get("AWS_ACCESS_KEY_ID") is None  # never read from release.toml
