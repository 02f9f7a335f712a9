"""The model index on every target (local, GitHub, HF Hub, S3) through the real client libraries
against the emulators: what `publish` writes, `promote` / `yank` / `reissue` (plan, dry run,
apply, idempotence, kill and resume), and every source reading it back."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from pipeline import config as cfg
from pipeline import index as ix
from pipeline.channels import Change, change_index, describe
from pipeline.client import Client, GitHubSource, HfSource, LocalSource, MirrorSource
from pipeline.client.index import status
from pipeline.client.s3 import S3Source
from pipeline.errors import ConfigError, UsageError
from pipeline.publish import publish, publishers_for
from pipeline.publishers.indexes import HUB_BRANCH, LocalIndexStore, github_index_tag
from pipeline.publishers.settings import PublishSettings
from pipeline.retry import RetryPolicy
from tests.conftest import FIXTURES, KEY
from tests.emulators.github import GitHubEmulator
from tests.emulators.huggingface import HubEmulator
from tests.emulators.s3 import S3Emulator
from tests.integration.publishing.conftest import (
    AWS_ENV,
    BUCKET,
    GH_REPO,
    GH_TOKEN,
    HF_REPO,
    HF_TOKEN,
    PUBLISH_TOML,
    make_build,
)

MODEL = "tiny-intent"
PREFIX = "team/models"
TARGETS = ("local", "github", "huggingface", "s3")


def toml(s3_url: str) -> str:
    return PUBLISH_TOML.replace(
        'targets = ["local", "github", "huggingface"]', f"targets = {list(TARGETS)!r}"
    ).replace("'", '"') + (
        f'\n[publish.s3]\nbucket = "{BUCKET}"\nprefix = "{PREFIX}"\n'
        f'endpoint_url = "{s3_url}"\nregion = "us-east-1"\n'
    )


def project(root: Path, s3_url: str, version: str) -> cfg.ReleaseConfig:
    """The tiny config at `version`, publishing to every target (one store for all versions)."""
    root.mkdir(parents=True, exist_ok=True)
    text = (
        (FIXTURES / "tiny.toml").read_text().replace('version = "0.0.1"', f'version = "{version}"')
    )
    text += toml(s3_url) + f'\n[publish.local]\nroot = "{root.parent / "store"}"\n'
    (root / "release.toml").write_text(text)
    return cfg.load(root / "release.toml")


@pytest.fixture(scope="module")
def emulators(tmp_path_factory):
    """GitHub, the Hub and S3, shared by this module's tests (each test reads the state it
    starts from; none depends on what the others did)."""
    with pytest.MonkeyPatch.context() as m:
        for k, v in AWS_ENV.items():
            m.setenv(k, v)
        with (
            GitHubEmulator(tokens={GH_TOKEN: "alice"}, repos=[GH_REPO]) as gh,
            HubEmulator(tokens={HF_TOKEN: "alice"}, orgs={"alice": ["acme"]}) as hub,
            S3Emulator() as s3,
        ):
            s3.create_bucket(BUCKET)
            yield gh, hub, s3
            assert gh.errors == hub.errors == s3.errors == []


class Fleet(NamedTuple):
    publishers: list
    signer: Any
    store: Path
    config: Path  # 0.0.1's release.toml (every target)


@pytest.fixture(scope="module")
def fleet(emulators, tmp_path_factory):
    """0.0.1 and 0.0.2 published, signed, to all four targets: (publishers, signer, store dir)."""
    gh, hub, s3 = emulators
    tmp_path = tmp_path_factory.mktemp("fleet")
    policy = RetryPolicy(sleep=lambda s: None, clock=lambda: 0.0, wall=lambda: 1_000_000.0)
    settings = PublishSettings(
        github_token=GH_TOKEN,
        github_api_url=gh.api_url,
        hf_token=HF_TOKEN,
        hf_endpoint=hub.url,
        signing_key=KEY.private_pem,
    )
    configs = {}
    for v in ("0.0.1", "0.0.2"):
        c = project(tmp_path / v, s3.url, v)
        make_build(c, payload=v.encode(), big=4096)
        publish(c, settings=settings, policy=policy)
        configs[v] = c
    publishers = publishers_for(configs["0.0.1"], (), settings, policy)
    return Fleet(publishers, settings.signer(), tmp_path / "store", configs["0.0.1"].path)


@pytest.fixture
def gh(emulators):
    return emulators[0]


@pytest.fixture
def hub(emulators):
    return emulators[1]


@pytest.fixture
def s3(emulators):
    return emulators[2]


def stored(fleet) -> dict[str, bytes | None]:
    from pipeline.publishers.indexes import store_for

    publishers, _, _, _ = fleet
    return {p.name: store_for(p).read(MODEL).current for p in publishers}


def the_index(fleet) -> ix.Index:
    """The one document every target holds (byte for byte), verified with the release key."""
    docs = stored(fleet)
    assert len(set(docs.values())) == 1, {k: (v or b"")[:80] for k, v in docs.items()}
    env = ix.parse(next(iter(docs.values())), "t")
    ix.verify(env, fleet[1].trust_root(), "t")
    return env.index


def test_publish_lists_each_version_and_moves_latest_on_every_target(fleet, gh, hub, s3) -> None:
    i = the_index(fleet)
    assert (i.sequence, dict(i.channels), i.versions) == (
        2,
        {"latest": "0.0.2"},
        ("0.0.1", "0.0.2"),
    )
    # where each host keeps it: a pre-release that never becomes GitHub's latest, a branch of
    # the HF repo (main keeps only the release's files), a no-cache object in the bucket
    rel = next(r for r in gh.releases(GH_REPO) if r["tag_name"] == github_index_tag(MODEL))
    assert rel["prerelease"] and [a["name"] for a in rel["assets"]] == ["index.json"]
    assert "index.json" in hub.files(HF_REPO, HUB_BRANCH)
    assert "index.json" not in hub.files(HF_REPO, "main")
    head = s3.head(BUCKET, f"{PREFIX}/{MODEL}/index.json")
    assert head["CacheControl"] == "no-cache"


def test_promote_rollback_yank_undo_each_a_new_sequence_everywhere(fleet, s3) -> None:
    publishers, signer, store, _ = fleet
    change_index(publishers, MODEL, Change("unyank", "0.0.2"), signer)
    steps = [
        (Change("promote", "0.0.2", "canary"), {"canary": "0.0.2", "latest": "0.0.2"}, {}),
        (Change("promote", "0.0.2", "stable"), {"stable": "0.0.2"}, {}),
        (Change("promote", "0.0.1", "stable"), {"stable": "0.0.1"}, {}),  # the rollback
        (Change("yank", "0.0.2", reason="wrong labels"), {}, {"0.0.2": "wrong labels"}),
        (Change("unyank", "0.0.2"), {}, {}),
    ]
    seq = the_index(fleet).sequence
    for change, channels, yanked in steps:
        change_index(publishers, MODEL, change, signer)
        i = the_index(fleet)
        seq += 1
        assert i.sequence == seq
        assert {k: i.channels[k] for k in channels} == channels
        assert dict(i.yanked) == yanked
    change_index(publishers, MODEL, Change("promote", "0.0.1", "stable"), signer)  # the rollback
    # the `latest` pointer, for clients older than the index, follows what `latest` serves
    change_index(publishers, MODEL, Change("yank", "0.0.2", reason="bad"), signer)
    assert the_index(fleet).pick("latest").version == "0.0.1"
    assert (store / MODEL / "latest").read_text() == "0.0.1\n"
    assert s3.objects(BUCKET, f"{PREFIX}/{MODEL}/latest") == {
        f"{PREFIX}/{MODEL}/latest": b"0.0.1\n"
    }


def test_dry_run_writes_nothing_and_a_rerun_writes_nothing(fleet, gh, hub, s3) -> None:
    publishers, signer, _, _ = fleet
    change_index(publishers, MODEL, Change("promote", "0.0.2", "dry"), signer)
    before, seq = stored(fleet), the_index(fleet).sequence
    for e in (gh, hub, s3):
        e.clear_log()
    plan, results = change_index(
        publishers, MODEL, Change("promote", "0.0.1", "dry"), signer, dry_run=True
    )
    text = "\n".join(describe(plan))
    assert "channel dry: 0.0.2 -> 0.0.1" in text and f"sequence {seq} -> {seq + 1}" in text
    assert [r.state for r in results] == ["planned"] * 4
    assert stored(fleet) == before
    assert gh.writes() == hub.writes() == s3.writes() == []

    change_index(publishers, MODEL, Change("promote", "0.0.1", "dry"), signer)
    for e in (gh, hub, s3):
        e.clear_log()
    after = stored(fleet)
    _, results = change_index(publishers, MODEL, Change("promote", "0.0.1", "dry"), signer)
    assert [r.state for r in results] == ["skipped"] * 4
    assert stored(fleet) == after
    assert gh.writes() == hub.writes() == s3.writes() == []


def test_promote_refuses_a_version_a_target_lacks(fleet) -> None:
    publishers, signer, _, _ = fleet
    with pytest.raises(UsageError, match="not published on local, github, huggingface, s3"):
        change_index(publishers, MODEL, Change("promote", "9.9.9", "stable"), signer)


def test_a_signed_index_is_not_replaced_by_an_unsigned_one(fleet) -> None:
    publishers, _, _, _ = fleet
    with pytest.raises(ConfigError, match="RELEASE_SIGNING_KEY"):
        change_index(publishers, MODEL, Change("promote", "0.0.1", "stable"), None)


class Killed(BaseException):
    """The process dies here (nothing below the raise runs; no except clause catches it)."""


def _killing(counter: dict, at: int, after: bool):
    """Wrap a function so that the `at`-th call of all wrapped ones dies before or after it runs."""

    def wrap(fn):
        def call(*a, **kw):
            counter["n"] += 1
            if counter["n"] == at and not after:
                raise Killed
            out = fn(*a, **kw)
            if counter["n"] == at and after:
                raise Killed
            return out

        return call

    return wrap


def test_killed_anywhere_then_resumed_converges_on_every_target(fleet, monkeypatch) -> None:
    """A promote and a yank, each killed before or after each of its remote operations (every
    request of every target through the publishers' one retry wrapper, and the local store's
    two writes), then run again: every target ends with the same signed document, holding the
    change once, under one new sequence."""
    publishers, signer, _, _ = fleet
    counter = {"n": 0}
    rng = random.Random(29)
    changes = [Change("promote", "0.0.1", "stable"), Change("yank", "0.0.2", reason="bad")]
    changes += [Change("promote", "0.0.2", "stable"), Change("unyank", "0.0.2")]
    # how many wrapped calls a full run makes
    total = {}
    for change in changes[:2]:
        counter["n"] = 0
        with monkeypatch.context() as m:
            _wrap_all(m, publishers, _killing(counter, -1, False))
            change_index(publishers, MODEL, change, signer)
        total[change.kind] = counter["n"]
    points = 0
    for round_ in range(2):
        for change in changes:
            before = the_index(fleet)
            counter["n"] = 0
            at = rng.randint(1, total.get(change.kind, total["promote"]))
            with monkeypatch.context() as m:
                _wrap_all(m, publishers, _killing(counter, at, rng.random() < 0.5))
                try:
                    change_index(publishers, MODEL, change, signer)
                except Killed:
                    points += 1
            change_index(publishers, MODEL, change, signer)  # the resume
            after = the_index(fleet)
            assert change.apply(before).same_content(after), (round_, change, at)
            noop = change.apply(before).same_content(before)  # e.g. already applied
            assert after.sequence == before.sequence + (0 if noop else 1), (round_, change, at)
    assert points >= 6


def _wrap_all(m, publishers, wrap) -> None:
    for p in publishers:
        if p.name == "local":
            m.setattr(LocalIndexStore, "write", wrap(LocalIndexStore.write))
            m.setattr(LocalIndexStore, "set_latest", wrap(LocalIndexStore.set_latest))
        else:
            m.setattr(p, "_call", wrap(p._call))


def test_every_source_reads_the_index_and_serves_the_channel(fleet, gh, hub, s3, tmp_path) -> None:
    publishers, signer, store, _ = fleet
    change_index(publishers, MODEL, Change("promote", "0.0.1", "read"), signer)
    seq = the_index(fleet).sequence
    s3.make_public(BUCKET)
    sources = [
        LocalSource(store),
        MirrorSource(s3.public_url(BUCKET, PREFIX)),
        GitHubSource(GH_REPO, web_url=gh.url, api_url=gh.api_url),
        GitHubSource(GH_REPO, token=GH_TOKEN, web_url=gh.url, api_url=gh.api_url),
        HfSource(HF_REPO, token=HF_TOKEN, endpoint=hub.url),
        S3Source(BUCKET, PREFIX, endpoint_url=s3.url, region="us-east-1"),
    ]
    trust = Client(public_key=KEY.public_pem).trust
    rows = status(sources, MODEL, trust=trust)
    for r in rows:
        assert (r.sequence, r.serves["read"], r.problem) == (seq, "0.0.1", None), r
        assert r.verified and r.verified.startswith("signed by key")
    for i, source in enumerate(sources):
        client = Client([source], public_key=KEY.public_pem, cache_dir=tmp_path / f"cache{i}")
        release = client.resolve(MODEL, channel="read", variants=["quantized"])
        assert (release.version, release.choice.sequence) == ("0.0.1", seq), source.name
    json.dumps([r.to_dict() for r in rows])  # `release status --json`


def test_reissue_adds_an_expiry_and_a_new_sequence(fleet) -> None:
    publishers, signer, _, _ = fleet
    before = the_index(fleet)
    change_index(publishers, MODEL, Change("reissue", expires_in=ix.expiry_in_days(7)), signer)
    after = the_index(fleet)
    assert after.sequence == before.sequence + 1 and after.expires is not None
    assert dict(after.channels) == dict(before.channels)


@pytest.mark.slow
def test_a_real_kill_mid_promote_then_the_same_command_finishes_it(fleet, gh, hub) -> None:
    """`release promote` in a fresh interpreter, SIGKILLed by the emulator in the middle of
    GitHub's asset replacement (the old index.json deleted, its reply lost, the new document not
    yet renamed: GitHub serves no index), then the same command again, which finishes it (the
    other kill points of every target: the in-process test above)."""
    from tests.integration.publishing.kills import Killer, run_killed

    publishers, signer, _, config = fleet
    github_hub = [p for p in publishers if p.name in ("github", "huggingface")]
    env = {
        **os.environ,
        "GITHUB_TOKEN": GH_TOKEN,
        "GITHUB_API_URL": gh.api_url,
        "HF_TOKEN": HF_TOKEN,
        "HF_ENDPOINT": hub.url,
        "RELEASE_SIGNING_KEY": KEY.private_pem,
    }
    args = [sys.executable, "-m", "pipeline", "--config", str(config), "promote", MODEL]
    args += ["--target", "github", "--target", "huggingface"]
    for n, (version, at, mode) in enumerate([("0.0.1", 2, "lost-reply")]):
        before = _index_of(github_hub)
        killer = Killer(at, mode, writes_only=True)
        rc = run_killed(
            killer, [*args, version, "--channel", "killed"], [gh, hub], env=env, timeout=300
        )
        assert killer.where is not None and rc == -signal.SIGKILL, (n, killer.where, rc)
        assert killer.where.startswith("DELETE /api/v3/repos/alice/models/releases/assets/")
        tag = github_index_tag(MODEL)
        assets = [
            a["name"] for r in gh.releases(GH_REPO) if r["tag_name"] == tag for a in r["assets"]
        ]
        assert assets == [f"index-{before.sequence + 1}.json"]  # no index.json at this moment
        resumed = subprocess.run(
            [*args, version, "--channel", "killed"],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert resumed.returncode == 0, resumed.stderr
        after = _index_of(github_hub)
        assert after.channels["killed"] == version and after.sequence == before.sequence + 1


def _index_of(publishers) -> ix.Index:
    from pipeline.publishers.indexes import store_for

    docs = {store_for(p).read(MODEL).current for p in publishers}
    assert len(docs) == 1 and None not in docs
    return ix.parse(docs.pop(), "t").index


def test_an_idle_poll_is_one_small_request_on_every_host(fleet, gh, hub, s3, tmp_path) -> None:
    """What a watching server's idle poll costs each host: the second read of an unchanged
    index, with the first read's validator."""
    from pipeline.client.index import read_index

    _, _, store, _ = fleet
    s3.make_public(BUCKET)
    cases = [
        (LocalSource(store), None, []),
        (MirrorSource(s3.public_url(BUCKET, PREFIX)), s3, [("GET", 304)]),
        (S3Source(BUCKET, PREFIX, endpoint_url=s3.url, region="us-east-1"), s3, [("GET", 304)]),
        # the public download redirects to storage, which answers 304
        (
            GitHubSource(GH_REPO, web_url=gh.url, api_url=gh.api_url),
            gh,
            [("GET", 302), ("GET", 304)],
        ),
        (
            GitHubSource(GH_REPO, token=GH_TOKEN, web_url=gh.url, api_url=gh.api_url),
            gh,
            [("GET", 304)],  # the release's JSON through the API
        ),
        # the resolve endpoint answers If-None-Match (huggingface/huggingface.js#1713)
        (HfSource(HF_REPO, token=HF_TOKEN, endpoint=hub.url), hub, [("GET", 304)]),
    ]
    for source, host, expected in cases:
        first = read_index(source, MODEL)
        assert first.changed, source.name
        if host is not None:
            host.clear_log()
        again = read_index(source, MODEL, first.validator)
        assert not again.changed, source.name
        got = [] if host is None else [(e.method, e.status) for e in host.log]
        assert got == expected, source.name
        assert host is None or all(e.sent == 0 for e in host.log), source.name
