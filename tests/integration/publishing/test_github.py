"""GitHub Releases through the real PyGithub against the emulator: every phase, every failure."""

from __future__ import annotations

import dataclasses
import logging

import pytest

from pipeline import config as cfg
from pipeline.errors import IntegrityError, RemoteError, VersionExistsError
from pipeline.publish import publish
from tests.integration.publishing.conftest import (
    GH_REPO,
    assert_github_release,
    github_state,
    local_bytes,
    make_build,
)

TAG = "v0.0.1"
UPLOADS = r"^/api/uploads/"


@pytest.fixture(autouse=True)
def without_the_index_step(monkeypatch):
    """These tests count the release protocol's requests one by one; the model index that a
    publish writes afterwards (its own release, asset and rename) is tested in test_channels.py."""
    monkeypatch.setattr("pipeline.publish._update_index", lambda *a, **k: None)


def run(config, settings, policy, **kw):
    return publish(config, ("github",), settings=settings, policy=policy, **kw)[0]


def test_first_publish_then_identical_republish_uploads_nothing(
    gh, settings, policy, project
) -> None:
    config, _ = project
    r = run(config, settings, policy)
    assert r.state == "done" and len(r.uploaded) == 6 and r.verified
    rel = assert_github_release(gh, GH_REPO, TAG, local_bytes(config))
    assert rel["name"] == "tiny-intent 0.0.1"
    assert f"![latency]({gh.url}/{GH_REPO}/releases/download/{TAG}/latency.png)" in rel["body"]
    assert gh.count("POST", r"/releases$") == 1 and gh.count("PATCH") == 1
    assert gh.count("POST", UPLOADS) == 6 and gh.count("GET", "^/api/storage/") == 6
    assert policy.waits == []

    gh.clear_log()
    r = run(config, settings, policy)
    assert r.state == "skipped" and r.skipped and not r.uploaded
    assert gh.writes() == []  # no upload, no create, no edit
    assert gh.count("GET", "^/api/storage/") == 6  # the comparison is the verification


def test_dry_run_sends_nothing_that_changes_state(gh, settings, policy, project) -> None:
    config, _ = project
    r = run(config, settings, policy, dry_run=True)
    assert r.state == "planned" and len(r.uploaded) == 6
    assert r.actions[0] == "create draft release v0.0.1 ('tiny-intent 0.0.1')"
    assert r.actions[-1] == "publish release v0.0.1 with report.md as its notes"
    assert gh.writes() == [] and gh.releases(GH_REPO) == []


def test_failure_after_the_draft_was_created(gh, settings, policy, project) -> None:
    config, _ = project
    gh.fail("POST", UPLOADS, status=500, times=100)
    policy.max_attempts = 2
    with pytest.raises(RemoteError) as e:
        run(config, settings, policy)
    assert e.value.exit_code == 6
    assert str(e.value).startswith("GitHub alice/models: upload export.pkl failed: HTTP 500")
    assert "gave up after 2 attempts" in str(e.value)
    [draft] = github_state(gh, GH_REPO, TAG)
    assert draft["draft"] is True and draft["assets"] == []
    gh.faults.clear()
    r = run(config, settings, policy)
    assert r.state == "done"
    assert_github_release(gh, GH_REPO, TAG, local_bytes(config))


def test_failure_after_some_assets_were_uploaded(gh, settings, policy, project) -> None:
    config, _ = project
    gh.fail("POST", r"name=report\.md", status=503, times=100)
    policy.max_attempts = 2
    with pytest.raises(RemoteError, match="upload report.md failed"):
        run(config, settings, policy)
    [draft] = github_state(gh, GH_REPO, TAG)
    assert sorted(a["name"] for a in draft["assets"]) == ["export.pkl", "export_quantized.pkl"]
    gh.faults.clear()
    gh.clear_log()
    r = run(config, settings, policy)
    assert r.state == "done" and sorted(r.skipped) == ["export.pkl", "export_quantized.pkl"]
    assert gh.count("POST", UPLOADS) == 4  # only what was missing
    assert gh.count("POST", r"/releases$") == 0  # the draft was reused
    assert_github_release(gh, GH_REPO, TAG, local_bytes(config))


def test_verify_failure_deletes_the_bad_asset_and_the_rerun_finishes(
    gh, settings, policy, project
) -> None:
    config, _ = project
    gh.corrupt("export_quantized.pkl", times=1)
    with pytest.raises(IntegrityError) as e:
        run(config, settings, policy)
    assert e.value.exit_code == 5 and "export_quantized.pkl reads back with blake3" in str(e.value)
    [draft] = github_state(gh, GH_REPO, TAG)
    assert draft["draft"] is True  # nobody saw it
    assert "export_quantized.pkl" not in {a["name"] for a in draft["assets"]}
    gh.clear_log()
    r = run(config, settings, policy)
    assert r.uploaded == ["export_quantized.pkl"] and gh.count("POST", UPLOADS) == 1
    assert_github_release(gh, GH_REPO, TAG, local_bytes(config))


def test_different_files_under_a_published_version_are_refused_then_replaced(
    gh, settings, policy, project
) -> None:
    config, _ = project
    run(config, settings, policy)
    first = local_bytes(config)
    make_build(config, payload=b"z")
    gh.clear_log()
    with pytest.raises(VersionExistsError) as e:
        run(config, settings, policy)
    assert e.value.exit_code == 3 and "pass --force to replace" in str(e.value)
    assert "export.pkl" in str(e.value)
    assert gh.writes() == []
    assert_github_release(gh, GH_REPO, TAG, first)  # untouched

    plan = run(config, settings, policy, dry_run=True)
    assert "export.pkl" in plan.refused and "report.md" in plan.skipped and gh.writes() == []

    r = run(config, settings, policy, force=True)
    assert r.state == "done"
    assert r.actions[0].startswith("turn published release v0.0.1 back into a draft")
    assert_github_release(gh, GH_REPO, TAG, local_bytes(config))


def test_leftovers_of_killed_runs_are_cleaned(gh, settings, policy, project) -> None:
    config, _ = project
    files = local_bytes(config)
    first = gh.add_release(
        GH_REPO,
        TAG,
        draft=True,
        assets={"export.pkl": files["export.pkl"]},
        unfinished={"export_quantized.pkl": files["export_quantized.pkl"][:100]},
    )
    gh.add_release(GH_REPO, TAG, draft=True)  # a second draft: a create whose reply was lost
    r = run(config, settings, policy)
    assert "delete unfinished upload export_quantized.pkl" in r.actions
    assert any(a.startswith("delete duplicate draft release") for a in r.actions)
    assert r.skipped == ["export.pkl"] and len(r.uploaded) == 5
    assert assert_github_release(gh, GH_REPO, TAG, files)["id"] == first


def test_retries_wait_exactly_what_the_host_asks(gh, settings, policy, project) -> None:
    config, _ = project
    gh.too_many_requests("GET", r"/releases/tags/", retry_after=7)
    gh.fail("POST", r"/releases$", status=502, times=2)
    gh.secondary_rate_limit("POST", UPLOADS, retry_after=3)
    gh.reset_connection("POST", r"name=export\.pkl", after_bytes=4096)
    gh.rate_limit("PATCH", ".", reset_at=1_000_030)  # policy.wall() is 1_000_000
    r = run(config, settings, policy)
    assert r.state == "done"
    # 429 Retry-After 7; 502 x2 backoff 2, 4; secondary limit Retry-After 3; reset: backoff
    # after attempt 2 = 4; primary limit: until the reset second has passed = 31
    assert policy.waits == [7, 2, 4, 3, 4, 31]
    assert gh.count("POST", r"/releases$") == 3
    assert_github_release(gh, GH_REPO, TAG, local_bytes(config))  # one export.pkl, one release


def test_a_persistent_failure_is_bounded_and_names_host_operation_object(
    gh, settings, policy, project
) -> None:
    config, _ = project
    gh.fail("GET", r"/releases/tags/", status=500, times=100)
    with pytest.raises(RemoteError) as e:
        run(config, settings, policy)
    assert gh.count("GET", r"/releases/tags/") == 5 and policy.waits == [2, 4, 8, 16]
    assert str(e.value).startswith("GitHub alice/models: find release v0.0.1 failed: HTTP 500")
    assert e.value.exit_code == 6 and gh.writes() == []


@pytest.mark.parametrize(
    ("token", "message"),
    [
        (None, "no token: set GITHUB_TOKEN (or GH_TOKEN)"),
        ("ghp_wrongTOKEN999", "the token in GITHUB_TOKEN was rejected"),
        ("ghp_readonly_0123456789", "may read but not write"),
    ],
)
def test_missing_rejected_and_read_only_tokens(
    gh, settings, policy, project, token, message
) -> None:
    config, _ = project
    s = dataclasses.replace(settings, github_token=token)
    with pytest.raises(RemoteError) as e:
        run(config, s, policy)
    assert e.value.exit_code == 6 and message in str(e.value)
    assert token is None or token not in str(e.value)
    assert gh.writes() == []
    assert gh.count() == (0 if token is None else 1)  # one GET of the repository at most


def test_unknown_repository(gh, settings, policy, tmp_path) -> None:
    from tests.integration.publishing.conftest import PUBLISH_TOML, write_project

    first = write_project(tmp_path / "p", PUBLISH_TOML.replace(GH_REPO, "alice/nope"))
    other = first.path.rename(first.path.with_name("staging.toml"))
    config = cfg.load(other)
    make_build(config)
    with pytest.raises(RemoteError, match="repository not found") as e:
        run(config, settings, policy)
    assert "repo in staging.toml" in str(e.value)  # the config file in use, not "release.toml"


def test_upload_progress_is_logged(gh, settings, policy, project, caplog) -> None:
    config, _ = project
    make_build(config, big=6 << 20)
    with caplog.at_level(logging.INFO, "pipeline.publish"):
        run(config, settings, policy)
    progress = [r.getMessage() for r in caplog.records if "upload export.pkl:" in r.getMessage()]
    assert progress[0] == "GitHub alice/models: upload export.pkl: 10% of 6.3 MB"
    assert progress[-1] == "GitHub alice/models: upload export.pkl: 100% of 6.3 MB"
    assert len(progress) == 10


def test_a_timeout_is_retried(gh, settings, policy, project) -> None:
    config, _ = project
    policy.timeout = 1  # PyGithub takes whole seconds
    gh.slow("GET", r"/releases/tags/", seconds=1.5)
    assert run(config, settings, policy).state == "done"
    assert policy.waits == [2]
    assert_github_release(gh, GH_REPO, TAG, local_bytes(config))


def test_verify_downloads_the_published_release(gh, settings, policy, project) -> None:
    from pipeline.publishers.github import GitHubPublisher

    config, manifest = project
    run(config, settings, policy)
    publisher = GitHubPublisher(config.publish.github, settings, policy=policy)
    publisher.verify(manifest)
    gh.corrupt("report.json")
    with pytest.raises(IntegrityError, match="report.json: blake3 differs from the manifest"):
        publisher.verify(manifest)
    other = dataclasses.replace(manifest, version="9.9.9")
    with pytest.raises(IntegrityError, match="no published release v9.9.9"):
        publisher.verify(other)
