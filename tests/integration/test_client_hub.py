"""The client's GitHub Releases and HF Hub sources against the emulators (tests/emulators/).

The HF source reads the Hub's download endpoint (`/resolve/`) with the client's Http; the GitHub source is
plain httpx against GitHub's public download URLs, or its REST API with a token.
"""

from __future__ import annotations

import functools
import logging
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipeline import manifest as mf
from pipeline.cli import cli
from pipeline.client import (
    GitHubSource,
    HfSource,
    Http,
    LocalSource,
    RetryPolicy,
)
from pipeline.client import fetch as client_fetch
from pipeline.errors import ArtifactNotFound, IntegrityError, ReleaseError
from pipeline.publishers.local import LocalStore
from tests.conftest import KEY, manifest_pin, signed_release
from tests.emulators.github import GitHubEmulator
from tests.emulators.huggingface import HubEmulator

REPO = "acme/models"
TOKEN = "ghp_test"
fetch = functools.partial(client_fetch, public_key=KEY.public_pem)  # releases signed by KEY
TRUST_ENV = {"RELEASE_PUBLIC_KEY": KEY.public_pem}


@pytest.fixture
def release(tmp_path: Path) -> tuple[Path, mf.Manifest, dict[str, bytes]]:
    d = tmp_path / "build"
    m, files = signed_release(d)
    return d, m, files


def fast_http() -> Http:
    return Http(
        RetryPolicy.for_downloads(
            max_attempts=3, base_delay=0.01, max_total=30, connect_timeout=2, timeout=5
        ),
        progress=False,
    )


@pytest.fixture
def gh(release):
    _, _, files = release
    with GitHubEmulator(tokens={TOKEN: "alice"}, repos=[REPO]) as emulator:
        emulator.add_release(REPO, "v1.0.0", assets=files)
        yield emulator


def github(gh: GitHubEmulator, token: str | None = None) -> GitHubSource:
    return GitHubSource(REPO, token=token, http=fast_http(), web_url=gh.url, api_url=gh.api_url)


def test_github_public_download_urls(tmp_path: Path, gh, release) -> None:
    _, m, _ = release
    r = fetch("m", sources=[github(gh)], cache_dir=tmp_path / "c")
    assert (r.variant, r.source, r.manifest_source) == (
        "quantized",
        f"github:{REPO}",
        f"github:{REPO}",
    )
    assert mf.check_file(r.path, m.variant("quantized")) is None
    assert gh.count("GET", "/releases/latest/download/manifest.json") == 1
    assert gh.count("GET", "/api/v3/") == 0  # no API call, so no API rate limit
    pinned = fetch(
        "m", "1.0.0", sources=[github(gh)], variants=["original"], cache_dir=tmp_path / "d"
    )
    assert mf.check_file(pinned.path, m.variant("original")) is None


def test_github_api_with_a_token_for_private_repositories(tmp_path: Path, gh, release) -> None:
    _, m, _ = release
    r = fetch("m", sources=[github(gh, TOKEN)], cache_dir=tmp_path / "c")
    assert mf.check_file(r.path, m.variant("quantized")) is None
    assert gh.count("GET", "/api/v3/repos/acme/models/releases/latest") == 1
    assert gh.count("GET", "/api/v3/repos/acme/models/releases/assets/") >= 2  # manifest + file
    with pytest.raises(ReleaseError, match="HTTP 401; check the token"):
        fetch("m", sources=[github(gh, "wrong")], cache_dir=tmp_path / "d")


def test_github_corrupted_asset_is_rejected_and_the_next_source_used(
    tmp_path: Path, gh, release
) -> None:
    d, m, _ = release
    gh.corrupt(mf.QUANTIZED_FILE, times=5)
    with pytest.raises(
        IntegrityError, match=f"github:{REPO}: m/1.0.0: downloaded export_quantized.pkl: blake3"
    ):
        fetch("m", sources=[github(gh)], variants=["quantized"], cache_dir=tmp_path / "c")
    LocalStore(tmp_path / "store").publish(d, m)
    r = fetch("m", sources=[github(gh), LocalSource(tmp_path / "store")], cache_dir=tmp_path / "c")
    assert (r.variant, r.source) == ("quantized", f"local:{tmp_path / 'store'}")


def test_github_connection_reset_is_retried(tmp_path: Path, gh, release) -> None:
    _, m, _ = release
    gh.reset_connection("GET", "/api/storage/.*/export.pkl", times=1)
    r = fetch("m", sources=[github(gh)], variants=["original"], cache_dir=tmp_path / "c")
    assert mf.check_file(r.path, m.variant("original")) is None
    assert [e.status for e in gh.log if e.path.endswith("/export.pkl")] == [302, 0, 302, 200]


def test_github_from_the_command_line(tmp_path: Path, gh, monkeypatch) -> None:
    monkeypatch.setenv("GITHUB_SERVER_URL", gh.url)
    monkeypatch.setenv("GITHUB_API_URL", gh.api_url)
    out = CliRunner().invoke(
        cli, ["fetch", "m", "-s", f"github:{REPO}", "--cache-dir", str(tmp_path / "c")]
    )
    assert out.exit_code == 5 and "not authenticated" in out.output  # a remote pickle: trust?
    out = CliRunner().invoke(
        cli,
        ["fetch", "m", "-s", f"github:{REPO}", "--cache-dir", str(tmp_path / "c")],
        env=TRUST_ENV,
    )
    assert out.exit_code == 0, out.output
    assert out.output.strip().endswith(str(Path("m") / "1.0.0" / mf.QUANTIZED_FILE))


@pytest.fixture
def hub(release):
    from huggingface_hub import HfApi

    _, _, files = release
    with HubEmulator(tokens={"hf_test": "alice"}, orgs={"alice": ["acme"]}) as emulator:
        emulator.add_repo("acme/m", files)
        emulator.add_repo("acme/private", files, private=True)
        api = HfApi(endpoint=emulator.url, token="hf_test")
        for repo in ("acme/m", "acme/private"):
            api.create_tag(repo, tag="v1.0.0")
        yield emulator


def test_hf_hub_download_latest_and_pinned(tmp_path: Path, hub, release) -> None:
    _, m, _ = release
    source = HfSource("acme/m", endpoint=hub.url, progress=False)
    r = fetch("m", sources=[source], cache_dir=tmp_path / "c")
    assert (r.variant, r.source) == ("quantized", "hf:acme/m")
    assert mf.check_file(r.path, m.variant("quantized")) is None
    assert hub.count("GET", "/acme/m/resolve/main/manifest.json") == 1
    assert hub.count("GET", "/acme/m/resolve/v1.0.0/export_quantized.pkl") == 1
    # huggingface_hub's own copy was moved into our cache, not kept twice
    assert not [
        p
        for p in (tmp_path / "c" / ".partial").rglob("*")
        if p.is_file() and p.stat().st_size > 1000
    ]
    pinned = fetch("m", "1.0.0", sources=[source], variants=["original"], cache_dir=tmp_path / "c")
    assert mf.check_file(pinned.path, m.variant("original")) is None
    with pytest.raises(ArtifactNotFound, match="RevisionNotFound|not found"):
        fetch("m", "9.9.9", sources=[source], cache_dir=tmp_path / "c")


def test_hf_token_from_the_environment_for_private_repos(
    tmp_path: Path, hub, release, monkeypatch
) -> None:
    monkeypatch.delenv("HF_TOKEN", raising=False)
    with pytest.raises(ReleaseError, match="a private repository needs HF_TOKEN"):
        fetch("m", sources=[HfSource("acme/private", endpoint=hub.url)], cache_dir=tmp_path / "c")
    monkeypatch.setenv("HF_TOKEN", "hf_test")
    r = fetch("m", sources=[HfSource("acme/private", endpoint=hub.url)], cache_dir=tmp_path / "c")
    assert r.variant == "quantized"


def test_hf_corrupted_file_is_rejected(tmp_path: Path, hub, release, caplog) -> None:
    d, m, _ = release
    hub.corrupt(mf.QUANTIZED_FILE, times=1)
    LocalStore(tmp_path / "store").publish(d, m)
    with caplog.at_level(logging.INFO, logger="pipeline"):
        r = client_fetch(  # a pinned manifest
            "m",
            sources=[HfSource("acme/m", endpoint=hub.url), LocalSource(tmp_path / "store")],
            cache_dir=tmp_path / "c",
            pin=manifest_pin(d),
        )
    assert r.source == f"local:{tmp_path / 'store'}"
    assert "hf:acme/m: m/1.0.0: downloaded export_quantized.pkl: blake3" in caplog.text


def test_hf_from_the_command_line_honours_hf_endpoint(tmp_path: Path, hub, monkeypatch) -> None:
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    out = CliRunner().invoke(
        cli,
        [
            "fetch",
            "m",
            "-s",
            "hf:acme/m",
            "--variant",
            "original",
            "--cache-dir",
            str(tmp_path / "c"),
        ],
        env=TRUST_ENV,
    )
    assert out.exit_code == 0, out.output
    assert out.output.strip().endswith(str(Path("m") / "1.0.0" / mf.ORIGINAL_FILE))


def test_hf_fetches_without_huggingface_hub(tmp_path: Path, hub, monkeypatch) -> None:
    # the source reads the Hub's plain HTTP endpoint with the client's own Http (its bounds)
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # as if it were not installed
    r = fetch(
        "m", sources=[HfSource("acme/m", endpoint=hub.url, http=fast_http())], cache_dir=tmp_path
    )
    assert (r.variant, r.source) == ("quantized", "hf:acme/m")
