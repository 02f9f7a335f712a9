"""The Hugging Face Hub through the real huggingface_hub against the emulator: every phase."""

from __future__ import annotations

import dataclasses
import hashlib

import pytest
import yaml

from pipeline.errors import IntegrityError, RemoteError, VersionExistsError
from pipeline.publish import publish
from tests.integration.publishing.conftest import (
    HF_REPO,
    assert_hub_release,
    local_bytes,
    make_build,
)

TAG = "v0.0.1"
LFS_PUT = r"^/_lfs/[0-9a-f]{64}$"


def run(config, settings, policy, **kw):
    return publish(config, ("huggingface",), settings=settings, policy=policy, **kw)[0]


def test_first_publish_then_identical_republish_uploads_nothing(
    hub, settings, policy, project
) -> None:
    config, _ = project
    r = run(config, settings, policy)
    assert r.state == "done" and r.verified and len(r.uploaded) == 7
    assert_hub_release(hub, HF_REPO, TAG, local_bytes(config))
    # model.pkl is export_quantized.pkl's bytes: one object, uploaded once, stored once
    files = hub.files(HF_REPO, TAG)
    assert files["model.pkl"] == files["export_quantized.pkl"]
    oid = hashlib.sha256(files["model.pkl"]).hexdigest()
    assert hub.count("PUT", f"^/_lfs/{oid}$") == 1
    assert [b.count(oid) for b in hub.batches] == [1, 1]  # the alias's batch: no upload action
    lfs_names = ["export_quantized.pkl", "latency.png"]  # the distinct LFS contents
    assert hub.stored_bytes() == sum(len(files[n]) for n in lfs_names)
    assert hub.repos[HF_REPO].private is True
    card = hub.files(HF_REPO, TAG)["README.md"].decode()
    meta = yaml.safe_load(card.split("---\n")[1])
    assert meta["library_name"] == "fastai" and meta["labels"] == ["billing", "shipping"]
    assert "intent" in meta["tags"] and meta["model-index"][0]["name"] == "tiny-intent"
    assert hub.count("POST", "/commit/main") == 1 and hub.count("PUT", LFS_PUT) == 2
    assert hub.count("POST", "/tag/") == 1

    hub.clear_log()
    r = run(config, settings, policy)
    assert r.state == "skipped" and len(r.skipped) == 7
    assert hub.writes() == []  # no create, preupload, upload, commit or tag


def test_dry_run_sends_nothing_that_changes_state(hub, settings, policy, project) -> None:
    config, _ = project
    r = run(config, settings, policy, dry_run=True)
    assert r.state == "planned"
    assert r.actions == [
        "create model repo acme/tiny-intent (private)",
        "commit to main: upload 7 file(s) + README.md (model card)",
        "model.pkl is export_quantized.pkl's LFS object: its bytes are uploaded once",
        "download the 8 files at the commit and check each blake3",
        "tag the commit v0.0.1",
    ]
    assert hub.writes() == [] and hub.repos == {}


def test_commit_failure_then_rerun(hub, settings, policy, project) -> None:
    config, _ = project
    hub.fail("POST", "/commit/main", status=500, times=100)
    policy.max_attempts = 2
    with pytest.raises(RemoteError) as e:
        run(config, settings, policy)
    assert str(e.value).startswith(
        "Hugging Face acme/tiny-intent: commit the release failed: HTTP 500"
    )
    assert hub.tags(HF_REPO) == {} and len(hub.commits(HF_REPO)) == 1  # all or nothing
    hub.faults.clear()
    hub.clear_log()
    assert run(config, settings, policy).state == "done"
    assert hub.count("PUT", LFS_PUT) == 0  # the LFS objects of the failed run are reused
    assert_hub_release(hub, HF_REPO, TAG, local_bytes(config))


def test_tag_failure_then_rerun_makes_no_second_commit(hub, settings, policy, project) -> None:
    config, _ = project
    hub.fail("POST", "/tag/", status=503, times=100)
    policy.max_attempts = 2
    with pytest.raises(RemoteError, match="tag the release failed"):
        run(config, settings, policy)
    assert hub.tags(HF_REPO) == {} and len(hub.commits(HF_REPO)) == 2
    hub.faults.clear()
    hub.clear_log()
    r = run(config, settings, policy)
    assert r.state == "done" and r.uploaded == []  # everything already on main
    assert hub.count("POST", "/commit/main") == 0  # (the model index has its own branch)
    assert_hub_release(hub, HF_REPO, TAG, local_bytes(config))


def test_verify_failure_leaves_no_tag_and_the_rerun_finishes(
    hub, settings, policy, project
) -> None:
    config, _ = project
    hub.corrupt("model.pkl", times=1)
    with pytest.raises(IntegrityError) as e:
        run(config, settings, policy)
    assert e.value.exit_code == 5 and "(model.pkl differ on download)" in str(e.value)
    assert hub.tags(HF_REPO) == {}  # nobody pins an unverified commit
    assert run(config, settings, policy).state == "done"
    assert_hub_release(hub, HF_REPO, TAG, local_bytes(config))


def test_a_tag_with_other_files_is_refused_then_forced(hub, settings, policy, project) -> None:
    config, _ = project
    run(config, settings, policy)
    first = local_bytes(config)
    make_build(config, payload=b"z", plot=False)  # another build, one file fewer
    hub.clear_log()
    with pytest.raises(VersionExistsError) as e:
        run(config, settings, policy)
    message = str(e.value)
    assert "acme/tiny-intent@v0.0.1: version 0.0.1 of tiny-intent is already published" in message
    assert "latency.png" in message
    assert hub.writes() == []
    assert_hub_release(hub, HF_REPO, TAG, first)
    plan = run(config, settings, policy, dry_run=True)
    assert plan.refused and hub.writes() == []

    r = run(config, settings, policy, force=True)
    assert r.state == "done"
    assert any("delete 1 left by an older release (latency.png)" in a for a in r.actions)
    assert_hub_release(hub, HF_REPO, TAG, local_bytes(config), commits=3)


def test_retries_wait_exactly_what_the_host_asks(hub, settings, policy, project) -> None:
    config, _ = project
    hub.fail("POST", "/preupload/", status=429, times=1, headers={"Retry-After": "5"})
    hub.fail("PUT", LFS_PUT, status=503, times=1)
    hub.reset_connection("PUT", LFS_PUT, after_bytes=1024)
    r = run(config, settings, policy)
    assert r.state == "done"
    # preupload 429: Retry-After 5. The two LFS PUTs run in parallel, so the 503 and the reset
    # mid-upload usually hit the same attempt (backoff after attempt 2 = 4); on a loaded machine
    # one PUT can finish before the other starts, and the reset then fails the next attempt
    # (backoff 8; seen in a fresh-clone CI run). huggingface_hub's own backoff never ran (it
    # would have slept 1 s and retried inside the attempt, adding a wait of its own).
    assert policy.waits in ([5, 4], [5, 4, 8])
    assert hub.count("PUT", LFS_PUT) >= 4  # 2, then each failed one again
    assert len([e for e in hub.log if e.method == "PUT" and e.status == 0]) == 1
    assert_hub_release(hub, HF_REPO, TAG, local_bytes(config))


@pytest.mark.parametrize(
    ("token", "message"),
    [
        (None, "no token: set HF_TOKEN"),
        ("hf_wrongTOKEN999", "the token in HF_TOKEN was rejected"),
        ("hf_readonly_0123456789", "is a read token"),
    ],
)
def test_missing_rejected_and_read_only_tokens(
    hub, settings, policy, project, token, message
) -> None:
    config, _ = project
    with pytest.raises(RemoteError) as e:
        run(config, dataclasses.replace(settings, hf_token=token), policy)
    assert e.value.exit_code == 6 and message in str(e.value)
    assert token is None or token not in str(e.value)
    assert hub.writes() == []


def test_namespace_the_token_cannot_write(hub, settings, policy, tmp_path) -> None:
    from tests.integration.publishing.conftest import PUBLISH_TOML, write_project

    config = write_project(tmp_path / "p", PUBLISH_TOML.replace(HF_REPO, "someone-else/m"))
    make_build(config)
    with pytest.raises(RemoteError, match="someone-else is neither the token's user"):
        run(config, settings, policy)


def test_a_timeout_is_retried(hub, settings, policy, project) -> None:
    config, _ = project
    policy.timeout = 0.5
    hub.slow("POST", "/preupload/", seconds=1.5)
    assert run(config, settings, policy).state == "done"
    assert policy.waits == [2]
    assert_hub_release(hub, HF_REPO, TAG, local_bytes(config))


def test_verify_downloads_the_tagged_release(hub, settings, policy, project) -> None:
    from pipeline.publishers.huggingface import HubPublisher

    config, manifest = project
    run(config, settings, policy)
    publisher = HubPublisher(config.publish.huggingface, settings, policy=policy)
    publisher.verify(manifest)
    hub.corrupt("report.json")
    with pytest.raises(IntegrityError, match=r"does not match the manifest \(report.json\)"):
        publisher.verify(manifest)
    with pytest.raises(IntegrityError, match="no tag v9.9.9"):
        publisher.verify(dataclasses.replace(manifest, version="9.9.9"))
