"""The client against a real HTTP mirror on 127.0.0.1 that injects faults (tests/mirror_server.py).

No torch here: the release is a small fake one (make_release_dir), signed with the tests' key,
which the servers here trust (a few tests pin the manifest or allow unverified ones instead);
loading is tested in test_client_load.py.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipeline import manifest as mf
from pipeline import signing
from pipeline.cli import cli
from pipeline.client import Cache, DiskFull, Http, MirrorSource, RetryPolicy
from pipeline.client import fetch as client_fetch
from pipeline.errors import IntegrityError
from tests.conftest import KEY, manifest_pin, sign_dir
from tests.integration.conftest import Waits, build_store, mirror
from tests.mirror_server import Fault, MirrorServer

fetch = functools.partial(client_fetch, public_key=KEY.public_pem)  # servers trust the tests' key
TRUST_ENV = {"RELEASE_PUBLIC_KEY": KEY.public_pem}  # the same for the command line

Q = f"/m/1.0.0/{mf.QUANTIZED_FILE}"
ORIG = f"/m/1.0.0/{mf.ORIGINAL_FILE}"
MANIFEST = "/m/1.0.0/manifest.json"


@pytest.fixture
def server(store):
    """The mirror of `store` the tests inject faults into (`good` is the other)."""
    with MirrorServer(store[0]) as s:
        yield s


def ranges(server: MirrorServer, path: str) -> list[str | None]:
    return [h.range for h in server.requests(path) if h.method == "GET"]


def test_cold_then_warm(tmp_path: Path, store, server) -> None:
    _, m = store
    cache = tmp_path / "c"
    r = fetch("m", sources=[mirror(server)], cache_dir=cache)
    assert (r.variant, r.source, r.cache_hit) == ("quantized", f"mirror:{server.url}", False)
    assert mf.check_file(r.path, m.variant("quantized")) is None
    assert server.count(Q) == 1 and server.count(ORIG) == 0
    before = len(server.hits)
    again = fetch("m", "1.0.0", sources=[mirror(server)], cache_dir=cache)
    assert again.cache_hit and len(server.hits) == before  # a pinned cached version: no request


@pytest.mark.parametrize("fault", [Fault.truncate(50_000), Fault.reset(50_000)])
def test_interrupted_body_is_resumed_with_range(tmp_path: Path, store, server, fault) -> None:
    _, m = store
    server.fail(ORIG, fault)
    r = client_fetch(  # allow_unverified: fetched (verified against the manifest), nothing loaded
        "m",
        sources=[mirror(server)],
        variants=["original"],
        cache_dir=tmp_path / "c",
        allow_unverified=True,
    )
    assert mf.check_file(r.path, m.variant("original")) is None
    assert ranges(server, ORIG) == [None, "bytes=50000-"]


def test_server_ignoring_range_starts_over(tmp_path: Path, store, server) -> None:
    _, m = store
    server.fail(ORIG, Fault.reset(50_000), Fault.ignore_range())
    pin = manifest_pin(store[0] / "m" / "1.0.0")
    r = client_fetch(
        "m", sources=[mirror(server)], variants=["original"], cache_dir=tmp_path / "c", pin=pin
    )
    assert mf.check_file(r.path, m.variant("original")) is None
    assert [h.status for h in server.requests(ORIG)] == [200, 200]


def test_corrupted_bytes_are_rejected_and_the_next_source_used(
    tmp_path: Path, store, server, good, caplog
) -> None:
    _, m = store
    server.always(Q, Fault.corrupt(at=123))
    cache = tmp_path / "c"
    with pytest.raises(IntegrityError) as e:
        fetch("m", sources=[mirror(server)], variants=["quantized"], cache_dir=cache)
    text = str(e.value)
    assert f"mirror:{server.url}" in text and mf.QUANTIZED_FILE in text
    assert f"manifest says {m.variant('quantized').blake3[:16]}" in text and "blake3 " in text
    assert not list(cache.glob(".partial/*.part"))
    with caplog.at_level(logging.INFO, logger="pipeline"):
        r = fetch("m", sources=[mirror(server), mirror(good)], cache_dir=cache)
    assert (r.variant, r.source) == ("quantized", f"mirror:{good.url}")
    assert (
        "deleted the download" in caplog.text
        and f"downloaded from mirror:{good.url}" in caplog.text
    )
    # the command line: exit 5 when no source could repair it
    out = CliRunner().invoke(
        cli,
        [
            "fetch",
            "m",
            "-s",
            server.url,
            "--variant",
            "quantized",
            "--cache-dir",
            str(tmp_path / "d"),
        ],
        env=TRUST_ENV,
    )
    assert out.exit_code == 5, out.output
    assert "export_quantized.pkl" in out.output and "manifest says" in out.output


def test_bad_signature_is_refused_and_the_next_source_used(
    tmp_path: Path, store, server, good
) -> None:
    root, m = store
    # the first mirror serves a bundle by another key; the second (`good`) the good one
    bad_root = tmp_path / "bad"
    shutil.copytree(root, bad_root)
    sign_dir(bad_root / "m" / "1.0.0", m, signing.generate())
    with MirrorServer(bad_root) as bad:
        out = CliRunner().invoke(
            cli,
            [
                "fetch",
                "m",
                "-s",
                bad.url,
                "--public-key",
                KEY.public_pem,
                "--cache-dir",
                str(tmp_path / "c"),
            ],
        )
        assert out.exit_code == 5 and "key mismatch" in out.output, out.output
        assert bad.count(Q) == 0  # nothing downloaded on an untrusted manifest
        r = fetch("m", sources=[mirror(bad), mirror(server)], cache_dir=tmp_path / "c")
    assert r.manifest_source == f"mirror:{server.url}"


def test_500_and_429_are_retried_and_retry_after_honoured(tmp_path: Path, store, server) -> None:
    waits = Waits()
    server.fail(MANIFEST, Fault.status(500), Fault.status(429, retry_after="2"))
    r = fetch("m", sources=[mirror(server, waits)], cache_dir=tmp_path / "c")
    assert r.variant == "quantized"
    assert [h.status for h in server.requests(MANIFEST)] == [500, 429, 200]
    assert len(waits) == 2 and waits[1] == 2.0  # Retry-After, longer than the backoff


def test_a_hanging_source_times_out_and_is_retried(tmp_path: Path, store, server) -> None:
    server.fail(Q, Fault.hang(10))
    start = time.monotonic()
    r = fetch(
        "m",
        sources=[mirror(server, timeout=0.3)],
        variants=["quantized"],
        cache_dir=tmp_path / "c",
    )
    assert r.variant == "quantized" and time.monotonic() - start < 5
    assert [h.status for h in server.requests(Q)] == [0, 200]


def test_all_sources_down_without_and_with_a_cache(tmp_path: Path, store, server, caplog) -> None:
    with MirrorServer(store[0]) as dead1, MirrorServer(store[0]) as dead2:
        down = [dead1.url, dead2.url]  # stopped: connections are refused
    # with a cached version a start succeeds, offline, and says so
    cache = tmp_path / "c"
    fetch("m", sources=[mirror(server)], cache_dir=cache)
    dead = [
        MirrorSource(u, http=Http(RetryPolicy.for_downloads(max_attempts=2, base_delay=0.01)))
        for u in down
    ]
    with caplog.at_level(logging.INFO, logger="pipeline"):
        r = fetch("m", sources=dead, cache_dir=cache)
    assert r.offline and r.cache_hit and r.manifest.version == "1.0.0"
    assert "offline (no source can be reached): using m 1.0.0 from the cache" in caplog.text
    # a hanging source is given up within its time budget
    server.always("/m/latest", Fault.hang(10))
    start = time.monotonic()
    r = fetch("m", sources=[mirror(server, max_attempts=2, timeout=0.2)], cache_dir=cache)
    assert r.offline and time.monotonic() - start < 5
    # nothing cached: one clear error naming what to pre-fetch (exit 6)
    empty = tmp_path / "empty"
    out = CliRunner().invoke(
        cli,
        ["fetch", "m", "-s", down[0], "-s", down[1], "--retries", "1", "--cache-dir", str(empty)],
        env=TRUST_ENV,
    )
    assert out.exit_code == 6, out.output
    assert "no source can be reached" in out.output and "pre-fetch" in out.output
    assert f"release fetch m --version latest --cache-dir {empty}" in out.output


def test_quantized_missing_from_one_mirror_only(tmp_path: Path, store, good) -> None:
    root, _ = store
    partial_root = tmp_path / "partial"
    shutil.copytree(root, partial_root)
    (partial_root / "m" / "1.0.0" / mf.QUANTIZED_FILE).unlink()
    with MirrorServer(partial_root) as partial:
        r = fetch("m", sources=[mirror(partial), mirror(good)], cache_dir=tmp_path / "c")
        assert [h.status for h in partial.requests(Q)] == [404]
    assert (r.variant, r.source) == ("quantized", f"mirror:{good.url}")


CHILD = """
import json, sys
from pipeline.client import Client, MirrorSource
client = Client.from_env(sources=[MirrorSource(sys.argv[1])], cache_dir=sys.argv[2])  # the key
r = client.fetch("m", variants=["original"])
print(json.dumps({"path": str(r.path), "hit": r.cache_hit}))
"""


def test_a_process_killed_mid_download_is_resumed_by_the_next(tmp_path: Path) -> None:
    root = tmp_path / "store"
    m = build_store(root, tmp_path, original=4_000_000)
    with MirrorServer(root) as server:
        killed_then_resumed(tmp_path / "c", m, server)


def killed_then_resumed(cache: Path, m: mf.Manifest, server: MirrorServer) -> None:
    server.always(ORIG, Fault.slow(400_000))  # ~4 MB file: ~10 s if nobody kills it
    halfway = threading.Event()
    server.on_body = lambda path, sent: sent >= 1_000_000 and halfway.set()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2]), **TRUST_ENV}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, server.url, str(cache)], env=env, stdout=subprocess.PIPE
    )
    part = Cache(cache).part(m.variant("original").blake3)
    try:
        assert halfway.wait(timeout=60), "the download never got going"
        # The server having sent 1 MB says nothing of what the client has written yet: wait for
        # the client's own .part file to hold it before killing.
        deadline = time.monotonic() + 60
        while not (part.exists() and part.stat().st_size >= 1_000_000):
            assert time.monotonic() < deadline, "the client never wrote 1 MB of the download"
            time.sleep(0.02)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
    finally:
        if child.poll() is None:
            child.kill()
    kept = part.stat().st_size
    assert 1_000_000 <= kept < m.variant("original").size
    server.clear()
    # the new start takes the lock the dead process held and asks only for the rest
    r = fetch("m", sources=[mirror(server)], variants=["original"], cache_dir=cache, lock_timeout=5)
    assert mf.check_file(r.path, m.variant("original")) is None and not part.exists()
    assert ranges(server, ORIG)[-1] == f"bytes={kept}-"


@pytest.fixture
def tmpfs(tmp_path: Path):
    """A 3 MB tmpfs (root only): a disk that really fills up."""
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a tmpfs needs root")
    mnt = tmp_path / "small-disk"
    mnt.mkdir()
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mnt)], capture_output=True, text=True
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_full_disk_is_a_clear_error_and_leaves_the_cache_intact(tmp_path: Path, tmpfs) -> None:
    root = tmp_path / "store"
    small = build_store(root, tmp_path, "1.0.0", quantized=200_000)
    big = build_store(root, tmp_path, "2.0.0", quantized=4_000_000)  # does not fit in 3 MB
    cache = tmpfs / "cache"
    with MirrorServer(root) as server:
        ok = fetch("m", "1.0.0", sources=[mirror(server)], cache_dir=cache)
        # 1) known before writing: the manifest's size does not fit
        with pytest.raises(DiskFull, match="needs 4.0 MB") as e:
            fetch("m", "2.0.0", sources=[mirror(server)], variants=["quantized"], cache_dir=cache)
        assert "cache is unchanged" in str(e.value)
        assert server.count(f"/m/2.0.0/{mf.QUANTIZED_FILE}") == 0
        # 2) the disk fills while downloading (someone else writes to it): ENOSPC mid-file
        mid = build_store(root, tmp_path, "3.0.0", quantized=1_500_000)  # fits at the start
        filled = threading.Event()

        def fill(path: str, sent: int) -> None:
            if path == f"/m/3.0.0/{mf.QUANTIZED_FILE}" and not filled.is_set():
                filled.set()
                with open(tmpfs / "filler", "wb") as f, contextlib_suppress():
                    f.write(b"\0" * (3 << 20))

        server.on_body = fill
        server.always(f"/m/3.0.0/{mf.QUANTIZED_FILE}", Fault.slow(2_000_000))
        with pytest.raises(DiskFull, match="no space left") as e:
            fetch("m", "3.0.0", sources=[mirror(server)], variants=["quantized"], cache_dir=cache)
        assert "nothing else in the cache was changed" in str(e.value)
    (tmpfs / "filler").unlink()
    assert not list(cache.glob(".partial/*.part"))
    assert Cache(cache).verify() == [] and Cache(cache).versions("m") == ["1.0.0"]
    assert mf.check_file(ok.path, small.variant("quantized")) is None
    assert big.version == "2.0.0" and mid.version == "3.0.0"


class contextlib_suppress:
    """Suppress the ENOSPC of the filler itself: its job is to fill the disk."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return exc[0] is not None and issubclass(exc[0], OSError)


def test_cli_fetch_from_a_mirror_prints_only_the_path(tmp_path: Path, store, server) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline",
            "fetch",
            "m",
            "-s",
            server.url,
            "--cache-dir",
            str(tmp_path / "c"),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
        env={**os.environ, **TRUST_ENV},
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"{tmp_path / 'c' / 'm' / '1.0.0' / mf.QUANTIZED_FILE}\n"
    assert f"downloaded from mirror:{server.url}" in proc.stderr and "\r" not in proc.stderr
    listed = CliRunner().invoke(
        cli, ["cache", "list", "--json", "--cache-dir", str(tmp_path / "c")]
    )
    data = json.loads(listed.output)
    assert data["versions"][0]["version"] == "1.0.0"
    assert list(data["versions"][0]["files"]) == [mf.QUANTIZED_FILE]
    verified = CliRunner().invoke(cli, ["cache", "verify", "--cache-dir", str(tmp_path / "c")])
    assert verified.exit_code == 0 and "1 cached version(s)" in verified.output
    (tmp_path / "c" / "m" / "1.0.0" / mf.QUANTIZED_FILE).write_bytes(b"x")
    verified = CliRunner().invoke(cli, ["cache", "verify", "--cache-dir", str(tmp_path / "c")])
    assert verified.exit_code == 5 and "1 bytes, manifest says" in verified.output
