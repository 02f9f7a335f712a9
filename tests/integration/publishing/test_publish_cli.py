"""`release publish --target github --target huggingface` as the release workflow runs it:
a fresh process, environment variables only, the real libraries against both emulators."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from pipeline import config as cfg
from pipeline import signing
from pipeline.manifest import SIGNATURE_NAME
from tests.conftest import ROOT
from tests.integration.publishing.conftest import (
    GH_REPO,
    GH_TOKEN,
    HF_REPO,
    HF_TOKEN,
    WORKFLOW,
    assert_github_release,
    assert_hub_release,
    env_for,
    local_bytes,
    make_build,
    release,
    write_project,
)

pytestmark = pytest.mark.slow
TAG = "v0.0.1"


@pytest.fixture
def work(tmp_path: Path) -> Path:
    config = write_project(tmp_path / "project")
    make_build(config)
    return config.path.parent


def files_under(*roots: Path) -> list[Path]:
    return [p for r in roots for p in r.rglob("*") if p.is_file() and not p.is_symlink()]


def test_signed_publish_to_both_hosts_then_verify_the_download(work, gh, hub, tmp_path) -> None:
    pair = signing.generate()
    env = env_for(gh, hub, RELEASE_SIGNING_KEY=pair.private_pem)
    proc = release(work, env, *WORKFLOW)
    assert proc.returncode == 0, proc.stderr
    assert "github: done" in proc.stdout and "huggingface: done" in proc.stdout
    config = cfg.load(work / "release.toml")
    files = local_bytes(config)
    assert SIGNATURE_NAME in files
    rel = assert_github_release(gh, GH_REPO, TAG, files)
    assert_hub_release(hub, HF_REPO, TAG, files)

    # What a user downloads from the release verifies with the pinned public key ...
    download = tmp_path / "download"
    download.mkdir()
    for a in rel["assets"]:
        (download / a["name"]).write_bytes(gh.asset_bytes(a["id"]))
    key = tmp_path / "release.pub"
    key.write_text(pair.public_pem)
    ok = release(work, env, "verify", str(download), "--public-key", str(key))
    assert ok.returncode == 0, ok.stderr
    assert "signed by key" in ok.stdout
    # ... and a tampered manifest does not, even with every file matching it.
    manifest = download / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"tiny-intent"', '"tiny-intent-evil"', 1))
    bad = release(work, env, "verify", str(download), "--public-key", str(key))
    assert bad.returncode == 5 and "the manifest was altered" in bad.stderr

    # No token or key in any output, log or file written (project, HF cache).
    written = files_under(work, Path(os.environ["HF_HOME"]))
    for secret in (GH_TOKEN, HF_TOKEN, pair.private_pem.splitlines()[1]):
        assert secret not in proc.stdout + proc.stderr
        assert not [p for p in written if secret.encode() in p.read_bytes()]


def test_missing_tokens_exit_6_before_any_request(work, gh, hub) -> None:
    proc = release(work, env_for(gh, hub, GITHUB_TOKEN=None, HF_TOKEN=None), *WORKFLOW)
    assert proc.returncode == 6, proc.stderr
    assert "2 publish targets cannot start (nothing was uploaded)" in proc.stderr
    assert "set GITHUB_TOKEN (or GH_TOKEN)" in proc.stderr and "set HF_TOKEN" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert gh.log == [] and hub.log == []


def test_rejected_token_exit_6_and_never_echoed(work, gh, hub) -> None:
    wrong = "ghp_wrongTOKENxyz987"
    proc = release(work, env_for(gh, hub, GITHUB_TOKEN=wrong), *WORKFLOW)
    assert proc.returncode == 6
    assert "the token in GITHUB_TOKEN was rejected" in proc.stderr
    assert wrong not in proc.stderr + proc.stdout
    assert gh.writes() == [] and hub.writes() == []  # HF was checked too, nothing uploaded


def test_partial_failure_exits_7_with_each_state_then_the_rerun_finishes(work, gh, hub) -> None:
    hub.fail("POST", "/commit/main", status=422, body={"error": "Invalid commit (injected)"})
    env = env_for(gh, hub)
    proc = release(work, env, *WORKFLOW)
    assert proc.returncode == 7, proc.stderr
    assert "1 of 2 targets failed; run the same command again" in proc.stderr
    assert "  github: done · alice/models release v0.0.1 · uploaded 6" in proc.stderr
    assert (
        "  huggingface: failed" in proc.stderr
        and "commit the release failed: HTTP 422" in proc.stderr
    )
    gh.clear_log()
    again = release(work, env, *WORKFLOW)
    assert again.returncode == 0, again.stderr
    assert "github: skipped" in again.stdout and "huggingface: done" in again.stdout
    # nothing of the finished release is written again (only the model index, now that every
    # target has the version: its own release, asset and rename)
    assert gh.count("POST", r"name=(?!index-)", query=True) == 0
    assert gh.count("PATCH", r"/releases/\d+$") == 0
    config = cfg.load(work / "release.toml")
    assert_github_release(gh, GH_REPO, TAG, local_bytes(config))
    assert_hub_release(hub, HF_REPO, TAG, local_bytes(config))


def test_dry_run_on_the_demo_config_plans_all_three_targets(gh, hub, tmp_path) -> None:
    """The demo release.toml (its repos, tag pattern), with a fake build of its version."""
    work = tmp_path / "demo"
    work.mkdir()
    shutil.copy(ROOT / "release.toml", work / "release.toml")
    config = cfg.load(work / "release.toml")
    make_build(config)
    gh.add_repo(config.publish.github.repo)
    hub.orgs["alice"].append(config.publish.huggingface.repo.split("/")[0])
    proc = release(
        work,
        env_for(gh, hub, RELEASE_SIGNING_KEY=signing.generate().private_pem),
        "publish",
        "--dry-run",
        "--target",
        "local",
        "--target",
        "github",
        "--target",
        "huggingface",
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for line in (
        "local: planned",
        "github: planned · fastai-release/erp-intent release v1.0.0 · would upload 7",
        "  - create draft release v1.0.0 ('erp-intent 1.0.0')",
        "  - upload 7 file(s) to the draft, then download each again and check its blake3",
        "  upload     model.sig",
        "huggingface: planned · fastai-release/erp-intent@v1.0.0 · would upload 8",
        "  - create model repo fastai-release/erp-intent (public)",
        "  - tag the commit v1.0.0",
        "  - commit to main: upload 8 file(s) + README.md (model card)",
        "  upload     model.pkl (131.1 kB)",
        "  upload     export_quantized.pkl (131.1 kB)",
    ):
        assert line in out, out
    assert gh.writes() == [] and hub.writes() == []
    assert not (work / "artifacts" / "releases").exists()
    assert not (config.build_dir / SIGNATURE_NAME).exists()  # a dry run writes nothing
    # the workflow's default, keyless: a dry run says it would sign, and needs no network
    keyless = release(
        work, env_for(gh, hub, RELEASE_SIGNING="sigstore"), "publish", "--dry-run", "-t", "github"
    )
    assert keyless.returncode == 0, keyless.stderr
    assert "would sign erp-intent 1.0.0 with Sigstore (keyless" in keyless.stderr
