"""One set of bounds for every transport (issue 27: findings 5, 6, 8, 9 and the transport parts of
12), each finding's proof of concept turned into a test against servers the tests start on
127.0.0.1: hostile HTTP mirrors (tests/mirror_server.py), a hostile S3 endpoint (moto behind the
fault proxy of tests/emulators/s3.py), and the GitHub and HF Hub emulators.

Memory is measured with tracemalloc (zlib and httpx allocate through Python's allocators), so a
bound is checked in the same process, without a subprocess per test.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import re
import time
import tracemalloc
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipeline import manifest as mf
from pipeline.cli import cli
from pipeline.client import (
    BadResponse,
    Client,
    GitHubSource,
    HfSource,
    Http,
    MirrorSource,
    RetryPolicy,
    Unreachable,
)
from pipeline.client import fetch as client_fetch
from pipeline.client.s3 import S3Source
from pipeline.errors import IntegrityError, RemoteError
from tests.conftest import KEY, signed_release
from tests.emulators.github import GitHubEmulator
from tests.emulators.huggingface import HubEmulator
from tests.emulators.s3 import S3Emulator
from tests.integration.conftest import build_store, mirror
from tests.mirror_server import Fault, MirrorServer

fetch = functools.partial(client_fetch, public_key=KEY.public_pem)  # the stores are signed by KEY
TRUST_ENV = {"RELEASE_PUBLIC_KEY": KEY.public_pem}
MANIFEST = "/m/1.0.0/manifest.json"
LATEST = "/m/latest"
Q = f"/m/1.0.0/{mf.QUANTIZED_FILE}"
MB = 1 << 20


@functools.cache
def gzip_of_zeros(mib: int, layers: int = 1) -> bytes:
    """`mib` MiB of zeros, gzipped `layers` times (64 MiB: 64 kB once, 200 bytes twice)."""
    c = zlib.compressobj(9, zlib.DEFLATED, 31)
    data = b"".join(c.compress(bytes(MB)) for _ in range(mib)) + c.flush()
    for _ in range(layers - 1):
        c = zlib.compressobj(9, zlib.DEFLATED, 31)
        data = c.compress(data) + c.flush()
    return data


@contextlib.contextmanager
def peak_memory() -> Iterator[list[int]]:
    """The peak of Python-allocated memory inside the block, in bytes (box[0] afterwards)."""
    box: list[int] = []
    tracemalloc.start()
    try:
        yield box
    finally:
        box.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()


def port(server: MirrorServer) -> int:
    return int(server.url.rsplit(":", 1)[1])


# -- finding 5: decoded bytes are capped by a bounded decoder -------------------------------------


def test_stacked_gzip_is_refused_before_a_byte_is_inflated(tmp_path: Path, hostile, good) -> None:
    # the proof of concept: a 980-byte `latest` (gzip, gzip) reached 1,060 MB of RSS
    bomb = gzip_of_zeros(64, layers=2)
    assert len(bomb) < 1000
    hostile.always(LATEST, Fault.encoded(bomb, "gzip, gzip"))
    with peak_memory() as peak:
        r = fetch("m", sources=[mirror(hostile), mirror(good)], cache_dir=tmp_path / "c")
    assert r.manifest_source == f"mirror:{good.url}"
    assert peak[0] < 8 * MB, peak  # before: every layer inflated, 64 MB and more
    with pytest.raises(BadResponse, match=r"Content-Encoding 'gzip, gzip': 2 stacked encodings"):
        mirror(hostile).latest("m")


def test_a_gzip_bomb_stops_at_the_small_file_limit_not_after_inflating(hostile) -> None:
    hostile.always(MANIFEST, Fault.encoded(gzip_of_zeros(64), "gzip"))
    http = Http(RetryPolicy.for_downloads(max_attempts=1), progress=False)
    with peak_memory() as peak, pytest.raises(BadResponse, match="once decoded"):
        http.get_bytes(hostile.url + MANIFEST, what="m", limit=MB)
    assert peak[0] < 4 * MB, peak  # before: a 64 kB chunk inflated whole (64 MB) before any check


def test_a_download_compressed_anyway_never_grows_past_the_manifest_size(
    tmp_path: Path, store, hostile, good
) -> None:
    size = store[1].variant("quantized").size
    hostile.always(Q, Fault.encoded(gzip_of_zeros(64), "gzip"))  # asked for identity; sent anyway
    part = tmp_path / "q.part"
    with peak_memory() as peak, pytest.raises(IntegrityError, match=f"more than the {size} bytes"):
        mirror(hostile, max_attempts=1).download("m", "1.0.0", mf.QUANTIZED_FILE, part, size)
    assert peak[0] < 4 * MB, peak
    assert part.stat().st_size <= size
    r = fetch("m", sources=[mirror(hostile), mirror(good)], cache_dir=tmp_path / "c")
    assert r.source == f"mirror:{good.url}"  # the file came from the next source


# -- finding 6: s3:// and hf: have the same bounds -------------------------------------------------

BUCKET, PREFIX = "releases", "p"
AWS = {
    "AWS_ACCESS_KEY_ID": "test",
    "AWS_SECRET_ACCESS_KEY": "test",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@pytest.fixture(scope="module")
def s3_base(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("s3store")
    build_store(tmp / "store", tmp)
    with S3Emulator() as s3:
        s3.create_bucket(BUCKET)
        c = s3.client()
        for f in (tmp / "store").rglob("*"):
            if f.is_file():
                key = f"{PREFIX}/{f.relative_to(tmp / 'store').as_posix()}"
                c.put_object(Bucket=BUCKET, Key=key, Body=f.read_bytes())
        yield s3


@pytest.fixture
def s3(s3_base, monkeypatch):
    for k, v in {**AWS, "AWS_ENDPOINT_URL_S3": s3_base.url}.items():
        monkeypatch.setenv(k, v)
    yield s3_base
    with s3_base.lock:
        s3_base._hostile.clear()
        s3_base.faults.clear()
    s3_base.clear_log()


def s3_source(s3: S3Emulator, **policy) -> S3Source:
    p = {"max_attempts": 1, "max_total": 30, "connect_timeout": 2, "timeout": 2, **policy}
    return S3Source(
        BUCKET,
        PREFIX,
        endpoint_url=s3.url,
        http=Http(RetryPolicy.for_downloads(**p), progress=False),
    )


def test_a_huge_s3_latest_is_capped_and_never_echoed(tmp_path: Path, s3, good) -> None:
    # the proof of concept: a 100 MB `latest` reached 1.46 GB RSS and 210 MB on stderr
    s3.huge("GET", rf"^/{BUCKET}/{PREFIX}/m/latest(\?|$)", 100 * MB)
    source = s3_source(s3)
    assert source.client is not None  # boto3 loaded and its client made before measuring
    start = time.monotonic()
    with peak_memory() as peak, pytest.raises(BadResponse, match="more than 1024 bytes") as e:
        source.latest("m")
    assert time.monotonic() - start < 3 and peak[0] < 4 * MB, peak
    assert len(str(e.value)) < 300 and "1111111111" not in str(e.value)
    r = fetch("m", sources=[s3_source(s3), mirror(good)], cache_dir=tmp_path / "c")
    assert r.manifest_source == f"mirror:{good.url}"


def test_an_s3_download_stops_at_the_manifest_size(tmp_path: Path, s3) -> None:
    # the proof of concept: a manifest entry of 1,000 bytes let the partial file grow to 268 MB
    s3.huge("GET", rf"/{PREFIX}/m/1\.0\.0/{re.escape(mf.QUANTIZED_FILE)}(\?|$)", 64 * MB)
    part = tmp_path / "q.part"
    with pytest.raises(IntegrityError, match="more than the 1000 bytes the manifest says"):
        s3_source(s3).download("m", "1.0.0", mf.QUANTIZED_FILE, part, 1000)
    assert not part.exists() or part.stat().st_size <= 1000


@pytest.mark.timeout(60)
def test_s3_obeys_timeout_and_retries(tmp_path: Path, s3, good) -> None:
    # the proof of concept: `--timeout 3 --retries 0` against a trickling endpoint took 41 s
    s3.trickle("GET", rf"^/{BUCKET}/{PREFIX}/m/1\.0\.0/manifest\.json(\?|$)", 0.2)
    args = ["fetch", "m", "-s", f"s3://{BUCKET}/{PREFIX}", "--timeout", "3", "--retries", "0"]
    start = time.monotonic()
    out = CliRunner().invoke(cli, [*args, "--cache-dir", str(tmp_path / "c")], env=TRUST_ENV)
    assert time.monotonic() - start < 5.5
    assert out.exit_code == 6, out.output
    assert "not finished within 3 s" in out.output
    out = CliRunner().invoke(
        cli, [*args, "-s", good.url, "--cache-dir", str(tmp_path / "d")], env=TRUST_ENV
    )
    assert out.exit_code == 0, out.output  # and the next source is tried


@pytest.fixture
def hub(tmp_path: Path):
    from huggingface_hub import HfApi

    _, files = signed_release(tmp_path / "build")
    with HubEmulator(tokens={"hf_test": "alice"}, orgs={"alice": ["acme"]}) as emulator:
        emulator.add_repo("acme/m", files)
        HfApi(endpoint=emulator.url, token="hf_test").create_tag("acme/m", tag="v1.0.0")
        yield emulator


@pytest.mark.timeout(60)
def test_hf_obeys_timeout_and_retries(tmp_path: Path, hub) -> None:
    hub.slow("GET", r"/acme/m/resolve/main/manifest\.json", seconds=6, times=3)
    args = ["fetch", "m", "-s", "hf:acme/m", "--timeout", "2", "--retries", "0"]
    start = time.monotonic()
    out = CliRunner().invoke(
        cli, [*args, "--cache-dir", str(tmp_path / "c")], env={**TRUST_ENV, "HF_ENDPOINT": hub.url}
    )
    assert time.monotonic() - start < 4.5
    assert out.exit_code == 6 and "not finished within 2 s" in out.output, out.output


def test_hf_small_files_and_downloads_are_capped(tmp_path: Path, hub) -> None:
    hub.fail("GET", r"/acme/m/resolve/main/manifest\.json", status=200, body="x" * (17 * MB))
    source = HfSource("acme/m", endpoint=hub.url, http=Http(progress=False))
    with peak_memory() as peak, pytest.raises(BadResponse, match="more than 16777216 bytes"):
        source.latest("m")
    assert peak[0] < 40 * MB, peak
    hub.fail("GET", r"/resolve/v1\.0\.0/export_quantized\.pkl", status=200, body="x" * MB)
    part = tmp_path / "q.part"
    with pytest.raises(IntegrityError, match="more than the 1000 bytes the manifest says"):
        source.download("m", "1.0.0", mf.QUANTIZED_FILE, part, 1000)
    assert not part.exists() or part.stat().st_size <= 1000


# -- finding 8: redirects --------------------------------------------------------------------------


def test_a_mirror_redirect_stays_home_unless_allowed_and_no_credential_follows(
    hostile, good
) -> None:
    target = f"http://localhost:{port(good)}{MANIFEST}"  # another origin
    hostile.always(MANIFEST, Fault.redirect(target))
    secrets = {"X-Api-Key": "k3y", "Cookie": "session=c00kie"}
    refused = MirrorSource(hostile.url, http=Http(progress=False), headers=secrets)
    with pytest.raises(
        BadResponse, match="another host; not followed.*--allow-redirect-host localhost"
    ):
        refused.read_bytes("m", "1.0.0", mf.MANIFEST_NAME)
    assert good.count(MANIFEST) == 0
    allowed = MirrorSource(
        hostile.url.replace("127.0.0.1", "deploy:pw@127.0.0.1"),
        http=Http(allow_redirect_hosts=["localhost"], progress=False),
        headers=secrets,
    )
    body = allowed.read_bytes("m", "1.0.0", mf.MANIFEST_NAME)
    assert body == (good.root / MANIFEST.lstrip("/")).read_bytes()
    home, away = hostile.requests(MANIFEST)[-1], good.requests(MANIFEST)[-1]
    assert home.header("X-Api-Key") == "k3y" and home.authorization  # the mirror's own
    for name in ("X-Api-Key", "Cookie", "Authorization"):
        assert away.header(name) is None, name  # before: X-Api-Key crossed


def test_a_redirected_connection_into_another_network_is_refused_after_connecting(
    hostile, good
) -> None:
    # DNS rebinding: the name resolved to a public address when checked, and the connection
    # went to loopback. The fake resolver says "public"; the peer check sees 127.0.0.1.
    origin = hostile.url.replace("127.0.0.1", "localhost")
    hostile.always(MANIFEST, Fault.redirect(f"http://localhost:{port(good)}{MANIFEST}"))
    http = Http(
        RetryPolicy.for_downloads(max_attempts=1),
        allow_redirect_hosts=["localhost"],
        resolve=lambda host: ["93.184.216.34"],
        progress=False,
    )
    with pytest.raises(BadResponse, match="a loopback address, and the source is public"):
        http.get_bytes(origin + MANIFEST, what="m")
    assert good.count(MANIFEST) == 0  # connected, refused before a byte of the request


def test_behind_a_proxy_the_proxy_resolves_an_allowed_redirect_host(
    hostile, good, monkeypatch
) -> None:
    # where only the proxy can resolve outside names, a redirect to an allowed host still works
    hostile.always(MANIFEST, Fault.redirect(f"http://cdn.invalid{MANIFEST}"))

    def no_dns(host: str) -> list[str]:  # what such a network answers (and no lookup leaves)
        raise OSError(f"{host}: Name or service not known")

    def client() -> Http:
        policy = RetryPolicy.for_downloads(max_attempts=1)
        return Http(policy, allow_redirect_hosts=["cdn.invalid"], resolve=no_dns)

    with pytest.raises(BadResponse, match="cdn.invalid does not resolve"):
        client().get_bytes(hostile.url + MANIFEST, what="m")
    monkeypatch.setenv("HTTP_PROXY", good.url)  # `good` serves the absolute-form request
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    body = client().get_bytes(hostile.url + MANIFEST, what="m")
    assert body == (good.root / MANIFEST.lstrip("/")).read_bytes()
    assert good.count(MANIFEST) == 1 and hostile.count(MANIFEST) == 2


@pytest.fixture
def gh(tmp_path: Path):
    _, files = signed_release(tmp_path / "gh-build")
    with GitHubEmulator(tokens={"ghp_test": "alice"}, repos=["acme/models"]) as emulator:
        emulator.add_release("acme/models", "v1.0.0", assets=files)
        yield emulator


def github(gh: GitHubEmulator, token: str | None = "ghp_test", **kw) -> GitHubSource:
    http = Http(RetryPolicy.for_downloads(max_attempts=1), progress=False, **kw)
    return GitHubSource("acme/models", token=token, http=http, web_url=gh.url, api_url=gh.api_url)


def test_the_github_token_goes_to_the_api_host_only(tmp_path: Path, gh, store) -> None:
    with MirrorServer(store[0]) as thief:
        release = gh.releases("acme/models")[0]
        for asset in release["assets"]:  # the API's answer names another host for each asset
            asset["url"] = f"http://localhost:{port(thief)}/steal/{asset['id']}"
        gh.fail("GET", r"/releases/tags/v1\.0\.0$", status=200, body=release, times=10)
        r = fetch("m", sources=[github(gh)], cache_dir=tmp_path / "c")
        assert r.source == "github:acme/models"
        assert thief.hits == []  # before: GET /steal/<id> with "Authorization: Bearer ghp_test"
        # the API's own asset URL redirecting to a host GitHub does not download from
        gh.fail("GET", r"/releases/assets/\d+$", status=302, headers={"Location": thief.url + "/x"})
        with pytest.raises(RemoteError, match="another host; not followed"):
            fetch(
                "m", "1.0.0", sources=[github(gh)], cache_dir=tmp_path / "d", variants=["original"]
            )
        assert thief.hits == []


def test_hf_redirects_only_to_the_hubs_hosts_and_the_token_stays_home(
    tmp_path: Path, hub, store
) -> None:
    with MirrorServer(store[0]) as elsewhere:
        to = f"http://localhost:{port(elsewhere)}{Q}"
        pattern = r"/acme/m/resolve/v1\.0\.0/export_quantized\.pkl"
        hub.fail("GET", pattern, status=302, headers={"Location": to}, times=2)
        source = HfSource("acme/m", endpoint=hub.url, token="hf_test", http=Http(progress=False))
        with pytest.raises(BadResponse, match="another host; not followed"):
            source.download("m", "1.0.0", mf.QUANTIZED_FILE, tmp_path / "q.part", 10)
        assert elsewhere.hits == []
        source.http = Http(allow_redirect_hosts=["localhost"], progress=False)
        size = store[1].variant("quantized").size
        source.download("m", "1.0.0", mf.QUANTIZED_FILE, tmp_path / "q.part", size)
        assert [h.authorization for h in elsewhere.requests(Q)] == [None]
    assert hub.count("GET", pattern) == 2


# -- finding 9: `release list` against hostile sources ---------------------------------------------


def _release_page(start: int) -> bytes:
    assets = [{"name": mf.MANIFEST_NAME}, {"name": mf.SIGNATURE_NAME}]
    page = [{"tag_name": f"v1.{start + i}.0", "assets": assets} for i in range(100)]
    page[0]["tag_name"] = "v6.6.6\x1b]0;pwned\x07\x1b[2J"  # a terminal title and a clear-screen
    return json.dumps(page).encode()


def test_list_caps_github_pagination_and_escapes_what_it_prints(tmp_path: Path) -> None:
    # the proof of concept: pagination that never ends (7,982 requests in 20 s)
    (tmp_path / "empty").mkdir()
    with MirrorServer(tmp_path / "empty") as api:
        api.fail("/repos/acme/models/releases", *[Fault.body(_release_page(0))] * 150)
        latest = json.dumps({"version": "1.0.0\x1b[31m"}).encode()
        api.always(f"/acme/models/releases/latest/download/{mf.MANIFEST_NAME}", Fault.body(latest))
        env = {"GITHUB_API_URL": api.url, "GITHUB_SERVER_URL": api.url}
        out = CliRunner().invoke(cli, ["list", "m", "-s", "github:acme/models"], env=env)
        assert api.count("/repos/acme/models/releases") == 100  # before: until the server gave out
    assert out.exit_code == 0, out.output
    assert "\x1b" not in out.output and "\x07" not in out.output
    assert "listing stopped after 100 pages of releases" in out.output
    assert "1 name(s) that are not version names skipped" in out.output
    assert r"'latest' names '1.0.0\x1b[31m', not a version name" in out.output


def test_list_caps_an_endless_s3_listing(s3) -> None:
    s3.endless_listing(BUCKET, times=150)  # then moto's own, final, page
    out = CliRunner().invoke(cli, ["list", "m", "-s", f"s3://{BUCKET}/{PREFIX}"])
    assert out.exit_code == 0, out.output
    assert s3.count("GET", r"list-type=2", query=True) == 100  # before: 151
    assert "listing stopped after 100 pages" in out.output


def test_list_of_a_huge_latest_prints_one_short_line(tmp_path: Path, hostile) -> None:
    # the proof of concept: a 16 MB `latest` became 33 MB of output
    hostile.always(LATEST, Fault.endless(16 * MB))
    out = CliRunner().invoke(cli, ["list", "m", "-s", hostile.url])
    assert out.exit_code == 6 and len(out.output) < 1000, out.output[:500]
    assert "more than 1024 bytes" in out.output


# -- finding 12: a base URL with a query string; a deadline per source, not per request ----------


def test_a_mirror_base_url_with_a_query_string(tmp_path: Path, good, caplog) -> None:
    good.require_query("token=s3cr3t-t0ken&v=1")
    base = f"{good.url}/?token=s3cr3t-t0ken&v=1"
    with caplog.at_level(logging.DEBUG):
        r = fetch("m", sources=[MirrorSource(base, http=Http(progress=False))], cache_dir=tmp_path)
    assert r.path.is_file()
    assert good.hits and {h.query for h in good.hits} == {"token=s3cr3t-t0ken&v=1"}
    assert "s3cr3t" not in caplog.text  # httpx's request lines are redacted
    out = CliRunner().invoke(
        cli, ["-v", "fetch", "m", "-s", base, "--cache-dir", str(tmp_path / "d")], env=TRUST_ENV
    )
    assert out.exit_code == 0 and "s3cr3t" not in out.output, out.output


def test_the_source_deadline_spans_a_fetch_and_then_the_next_source_is_tried(
    tmp_path: Path, hostile, good
) -> None:
    hostile.always(LATEST, Fault.trickle(0.2))  # 6 bytes: 1.2 s, well within --timeout
    hostile.always(Q, Fault.slow(20_000))  # 40 kB: 2 s, well within --timeout
    client = Client(
        [mirror(hostile), mirror(good)],
        public_key=KEY.public_pem,
        cache_dir=tmp_path / "c",
        source_deadline=2.0,
    )
    start = time.monotonic()
    r = client.fetch("m", variants=["quantized"])
    assert r.manifest_source == f"mirror:{hostile.url}"  # its manifest came in time
    assert r.source == f"mirror:{good.url}"  # its file did not: 2 s for the whole fetch
    assert time.monotonic() - start < 3.5


def test_the_source_deadline_from_the_command_line(tmp_path: Path, hostile) -> None:
    hostile.always(MANIFEST, Fault.trickle(0.2))
    args = ["fetch", "m", "-s", hostile.url, "--cache-dir", str(tmp_path / "c"), "--timeout", "60"]
    out = CliRunner().invoke(cli, [*args, "--source-deadline", "1.5"], env=TRUST_ENV)
    assert out.exit_code == 6, out.output
    assert f"the 2 s one fetch may spend on mirror:{hostile.url} ran out" in out.output
    out = CliRunner().invoke(cli, [*args, "--allow-redirect-host", "http://x/"], env=TRUST_ENV)
    assert out.exit_code == 3 and "expected HOST, HOST:PORT or *.DOMAIN" in out.output


def test_unreachable_is_what_a_spent_budget_raises(tmp_path: Path, hostile) -> None:
    hostile.always(LATEST, Fault.trickle(0.2))
    client = Client([mirror(hostile)], cache_dir=tmp_path / "c", source_deadline=0.5)
    with pytest.raises(Unreachable, match="ran out"):
        client.fetch("m")
