"""Fixtures for publishing against the emulators: a fake build of the tiny config, settings, a
retry policy that records its waits instead of sleeping."""

from __future__ import annotations

import json
import os
import random
import subprocess
from pathlib import Path

import pytest

from pipeline import config as cfg
from pipeline import manifest as mf
from pipeline.build import build_key
from pipeline.publishers.settings import PublishSettings
from pipeline.retry import RetryPolicy
from tests.conftest import FIXTURES
from tests.emulators.github import GitHubEmulator
from tests.emulators.huggingface import HubEmulator
from tests.emulators.s3 import S3Emulator
from tests.helpers import run_python

GH_TOKEN = "ghp_emulatorTOKEN0123456789"
HF_TOKEN = "hf_emulatorTOKEN0123456789"
GH_REPO = "alice/models"
HF_REPO = "acme/tiny-intent"
PUBLISH_TOML = f"""
[publish]
targets = ["local", "github", "huggingface"]

[publish.github]
repo = "{GH_REPO}"
pause_between_writes = 0.0

[publish.huggingface]
repo = "{HF_REPO}"
private = true
tags = ["intent"]
license = "apache-2.0"
"""


def write_project(directory: Path, extra: str = PUBLISH_TOML) -> cfg.ReleaseConfig:
    """tests/fixtures/tiny.toml plus publish targets, in `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "release.toml"
    path.write_text((FIXTURES / "tiny.toml").read_text() + extra)
    return cfg.load(path)


def make_build(
    config: cfg.ReleaseConfig, payload: bytes = b"q", big: int = 1 << 20, plot: bool = True
) -> mf.Manifest:
    """A finished build for `config` without training: fake pickles (export.pkl is `big` bytes),
    report, a plot (unless `plot` is off) and a manifest carrying the config's build key, so
    publish uses it as is."""
    d = config.build_dir
    d.mkdir(parents=True, exist_ok=True)
    for p in d.iterdir():
        p.unlink()
    rng = random.Random(payload)
    (d / mf.ORIGINAL_FILE).write_bytes(payload + rng.randbytes(big))
    (d / mf.QUANTIZED_FILE).write_bytes(payload + rng.randbytes(big // 8))
    (d / "report.md").write_text("# report\n\n![latency](latency.png)\n")
    (d / "report.json").write_text(
        json.dumps(
            {"validate": {"baseline": {"name": "tf-idf + logistic regression", "accuracy": 0.9}}}
        )
    )
    if plot:
        (d / "latency.png").write_bytes(b"\x89PNG fake plot " + payload)
    entries = (
        mf.file_entry(d / mf.ORIGINAL_FILE, "original"),
        mf.file_entry(d / mf.QUANTIZED_FILE, "quantized"),
        mf.file_entry(d / "report.md", kind="report"),
        mf.file_entry(d / "report.json", kind="report"),
    ) + ((mf.file_entry(d / "latency.png", kind="plot"),) if plot else ())
    m = mf.Manifest(
        model=config.model.name,
        version=config.model.version,
        labels=("billing", "shipping"),
        files=entries,
        environment={
            "python": "3.11.7",
            "torch": "2.13.0",
            "fastai": "2.8.12",
            "fastcore": "1.8.0",
        },
        created="2026-01-01T00:00:00Z",
        build_key=build_key(config),
        validation={
            "passed": True,
            "metrics": {"accuracy_original": 0.91, "accuracy_quantized": 0.905, "agreement": 0.99},
            "eval_rows": 20,
        },
        golden_queries=(mf.GoldenQuery("where is my parcel", "shipping"),),
    )
    m.write(d)
    return m


@pytest.fixture
def gh():
    with GitHubEmulator(
        tokens={GH_TOKEN: "alice", "ghp_readonly_0123456789": ("bob", "read")}, repos=[GH_REPO]
    ) as emulator:
        yield emulator
    assert emulator.errors == []


@pytest.fixture
def hub():
    with HubEmulator(
        tokens={HF_TOKEN: "alice", "hf_readonly_0123456789": ("bob", "read")},
        orgs={"alice": ["acme"]},
    ) as emulator:
        yield emulator
    assert emulator.errors == []


@pytest.fixture
def settings(gh, hub) -> PublishSettings:
    return PublishSettings(
        github_token=GH_TOKEN,
        github_api_url=gh.api_url,
        hf_token=HF_TOKEN,
        hf_endpoint=hub.url,
    )


@pytest.fixture
def policy() -> RetryPolicy:
    """Records its waits in `policy.waits` and never sleeps; a fixed clock."""
    return RetryPolicy(sleep=lambda s: None, clock=lambda: 0.0, wall=lambda: 1_000_000.0)


@pytest.fixture
def project(tmp_path: Path) -> tuple[cfg.ReleaseConfig, mf.Manifest]:
    config = write_project(tmp_path / "project")
    return config, make_build(config)


def local_bytes(config: cfg.ReleaseConfig) -> dict[str, bytes]:
    """Every file of the build that a host must end up holding (manifest and signature too)."""
    d = config.build_dir
    return {
        p.name: p.read_bytes()
        for p in sorted(d.iterdir())
        if p.is_file() and not p.name.startswith(".")
    }


def github_state(gh: GitHubEmulator, repo: str, tag: str) -> list[dict]:
    """Every release of `repo` with this tag, drafts included."""
    return [r for r in gh.releases(repo) if r["tag_name"] == tag]


def assert_github_release(
    gh: GitHubEmulator, repo: str, tag: str, expected: dict[str, bytes]
) -> dict:
    """Exactly one release for `tag`, published, holding exactly `expected` (bytes compared)."""
    releases = github_state(gh, repo, tag)
    assert len(releases) == 1, [(r["id"], r["draft"]) for r in releases]
    rel = releases[0]
    assert rel["draft"] is False
    assets = rel["assets"]
    assert all(a["state"] == "uploaded" for a in assets), assets
    assert sorted(a["name"] for a in assets) == sorted(expected)
    for a in assets:
        assert gh.asset_bytes(a["id"]) == expected[a["name"]], a["name"]
    return rel


def hub_view(release: dict[str, bytes]) -> dict[str, bytes]:
    """What the Hub repo must hold of a release's files (default [publish.huggingface]
    variants): no original export.pkl; model.pkl (the quantized learner's bytes) and the
    pyproject.toml from_pretrained_fastai reads, made from the manifest's environment."""
    from pipeline.publishers.huggingface import pyproject_toml

    out = {k: v for k, v in release.items() if k != mf.ORIGINAL_FILE}
    out["model.pkl"] = release[mf.QUANTIZED_FILE]
    out["pyproject.toml"] = pyproject_toml(mf.Manifest.from_json(release[mf.MANIFEST_NAME]))
    return out


def assert_hub_release(
    hub: HubEmulator, repo: str, tag: str, release: dict[str, bytes], commits: int = 2
) -> None:
    """The tag names a commit holding exactly the Hub's view of `release` (hub_view) plus
    README.md and .gitattributes, and main has `commits` commits (the repository's initial one
    + one per release commit)."""
    expected = hub_view(release)
    tags = hub.tags(repo)
    assert list(tags) == [tag]
    files = hub.files(repo, tag)
    assert sorted(files) == sorted([*expected, "README.md", ".gitattributes"])
    for name, data in expected.items():
        assert files[name] == data, name
    assert files["README.md"].startswith(b"---\nlibrary_name: fastai\n")
    assert len(hub.commits(repo)) == commits and hub.commits(repo)[0] == tags[tag]


BUCKET = "releases"


def s3_toml(url: str, bucket: str = BUCKET, prefix: str = "team/models") -> str:
    return f"""
[publish]
targets = ["s3"]

[publish.s3]
bucket = "{bucket}"
prefix = "{prefix}"
endpoint_url = "{url}"
region = "us-east-1"
"""


AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "AKIAEMULATOR0000",
    "AWS_SECRET_ACCESS_KEY": "emulatorSECRETkey0123456789",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@pytest.fixture
def s3(monkeypatch):
    for k, v in AWS_ENV.items():
        monkeypatch.setenv(k, v)
    with S3Emulator() as emulator:
        emulator.create_bucket(BUCKET)
        yield emulator
    assert emulator.errors == []


WORKFLOW = ("publish", "--target", "github", "--target", "huggingface")  # as release.yml runs it


def env_for(gh: GitHubEmulator, hub: HubEmulator, **extra: str | None) -> dict[str, str]:
    """The environment a CI job gives `release publish`, pointed at the emulators (None unsets)."""
    env = {
        **os.environ,
        "GITHUB_TOKEN": GH_TOKEN,
        "GITHUB_API_URL": gh.api_url,
        "HF_TOKEN": HF_TOKEN,
        "HF_ENDPOINT": hub.url,
    }
    for k, v in extra.items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = v
    return env


def release(cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    """`release ARGS` in a fresh interpreter."""
    return run_python("-m", "pipeline", *args, cwd=cwd, env=env)
