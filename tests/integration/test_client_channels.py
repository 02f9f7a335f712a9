"""Issue 29, the client's rules for the model index, against a hostile mirror on 127.0.0.1
(tests/mirror_server.py) and a local store: channels, an operator's rollback (a lower version
under a higher sequence), replays, yanks, freezes, and what an unauthenticated index may not do.
Fake releases, no torch (the live model and batches are in test_fleet_live.py)."""

from __future__ import annotations

import logging
import shutil
from datetime import timedelta
from pathlib import Path

import pytest

from pipeline import index as ix
from pipeline import signing
from pipeline.channels import Change, change_index
from pipeline.client import Client, Http, LocalSource, MirrorSource
from pipeline.client.index import MEMORY_NAME, Validator, read_index
from pipeline.errors import ArtifactNotFound, IntegrityError
from pipeline.publishers.local import LocalStore
from tests.conftest import KEY
from tests.integration.test_client_trust import release
from tests.mirror_server import Fault, MirrorServer

SIGNER = signing.Signer("key", KEY.private_pem.encode())
INDEX_PATH = "/m/index.json"


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """Versions 1.0.0 and 1.1.0 of `m`, signed; the signed index: latest -> 1.1.0."""
    root = tmp_path / "store"
    for v in ("1.0.0", "1.1.0"):
        release(root, tmp_path, v)
    change(root, Change("add", "1.0.0"))
    change(root, Change("add", "1.1.0"))
    return root


def change(root: Path, c: Change, signer=SIGNER, **kw) -> ix.Index:
    change_index([LocalStore(root)], "m", c, signer, **kw)
    return ix.parse((root / "m" / "index.json").read_bytes(), "t").index


@pytest.fixture
def server(store: Path):
    with MirrorServer(store) as s:
        yield s


def client(server: MirrorServer, cache: Path, **kw) -> Client:
    options = {"public_key": KEY.public_pem, **kw}
    return Client([MirrorSource(server.url, http=Http(progress=False))], cache_dir=cache, **options)


def fetched(c: Client, **kw) -> str:
    return c.fetch("m", variants=["quantized"], **kw).manifest.version


def test_a_rollback_is_a_lower_version_under_a_higher_sequence_and_is_accepted(
    store, server, tmp_path
) -> None:
    c = client(server, tmp_path / "cache")
    assert fetched(c) == "1.1.0"  # the cache has now verified 1.1.0
    i = change(store, Change("promote", "1.0.0", "latest"))
    assert fetched(c) == "1.0.0"  # below what the cache verified: the signed index says so
    release_ = c.resolve("m")
    assert (release_.version, release_.choice.sequence, release_.choice.trusted) == (
        "1.0.0",
        i.sequence,
        True,
    )
    # the `latest` pointer alone (no index) may still never go back: that rule stands
    (store / "m" / "index.json").unlink()
    (tmp_path / "cache" / "m" / MEMORY_NAME).unlink()
    assert fetched(c) == "1.1.0"


def test_a_replayed_older_index_is_refused_and_the_verified_one_kept(
    store, server, tmp_path, caplog
) -> None:
    old = (store / "m" / "index.json").read_bytes()  # latest -> 1.1.0
    c = client(server, tmp_path / "cache")
    assert fetched(c) == "1.1.0"
    n = change(store, Change("promote", "1.0.0", "latest")).sequence  # the rollback
    assert fetched(c) == "1.0.0"
    server.always(INDEX_PATH, Fault.body(old))  # a mirror replaying the old index
    with caplog.at_level(logging.WARNING, "pipeline.client"):
        assert fetched(c) == "1.0.0"
    assert f"sequence {n - 1}, older than sequence {n}" in caplog.text
    assert f"as the index this client verified last (sequence {n})" in caplog.text
    remembered = ix.parse((tmp_path / "cache" / "m" / MEMORY_NAME).read_bytes(), "t")
    assert remembered.index.sequence == n
    # a new process on the same cache remembers it too; a fresh cache has nothing to go by
    assert fetched(client(server, tmp_path / "cache")) == "1.0.0"
    assert fetched(client(server, tmp_path / "fresh")) == "1.1.0"


def test_the_same_sequence_with_other_content_is_refused(store, server, tmp_path, caplog) -> None:
    c = client(server, tmp_path / "cache")
    assert fetched(c) == "1.1.0"
    here = ix.parse((store / "m" / "index.json").read_bytes(), "t").index
    forked = ix.seal(here.promoted("1.0.0", "latest").issue(here.sequence, ix.now_utc()), SIGNER)
    server.always(INDEX_PATH, Fault.body(forked.to_bytes()))
    with caplog.at_level(logging.WARNING, "pipeline.client"):
        assert fetched(c) == "1.1.0"
    assert "with other content than the sequence" in caplog.text


def test_a_yanked_version_is_skipped_by_channels_and_warned_on_a_pin(
    store, server, tmp_path, caplog
) -> None:
    change(store, Change("promote", "1.1.0", "stable"))
    change(store, Change("yank", "1.1.0", reason="mislabels refunds as billing"))
    c = client(server, tmp_path / "cache")
    with caplog.at_level(logging.WARNING, "pipeline.client"):
        assert fetched(c) == "1.0.0"
        assert fetched(c, channel="stable") == "1.0.0"
    assert "1.1.0 is yanked (mislabels refunds as billing); channel 'stable' serves 1.0.0" in (
        caplog.text
    )
    caplog.clear()
    with caplog.at_level(logging.WARNING, "pipeline.client"):
        r = c.fetch("m", "1.1.0", variants=["quantized"])  # an exact pin still gets it
    assert r.manifest.version == "1.1.0"
    assert "m 1.1.0 is YANKED: mislabels refunds as billing" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, "pipeline.client"):  # from the cache: no request
        server.hits.clear()
        assert c.resolve("m", "1.1.0").yanked == "mislabels refunds as billing"
    assert server.hits == [] and "YANKED" in caplog.text
    change(store, Change("unyank", "1.1.0"))
    assert fetched(c, channel="stable") == "1.1.0"


def test_an_expired_or_old_index_is_refused_when_a_maximum_age_is_set(
    store, server, tmp_path
) -> None:
    old = ix.now_utc() - timedelta(days=10)
    change(store, Change("promote", "1.0.0", "stable"), now=old)
    assert fetched(client(server, tmp_path / "a"), channel="stable") == "1.0.0"
    with pytest.raises(
        IntegrityError, match=r"issued 10.0 days ago \(sequence \d+\), more than the maximum age"
    ):
        client(server, tmp_path / "b", max_age_days=7).resolve("m", channel="stable")
    change(store, Change("reissue"))  # the operator re-issues it: fresh again
    assert fetched(client(server, tmp_path / "c", max_age_days=7), channel="stable") == "1.0.0"
    change(store, Change("reissue", expires_in=timedelta(days=1)), now=old)
    with pytest.raises(IntegrityError, match="expired at"):
        client(server, tmp_path / "d").resolve("m", channel="stable")


def test_an_unauthenticated_index_changes_nothing_that_outlives_the_process(
    store, server, tmp_path
) -> None:
    cache = tmp_path / "cache"
    (store / "m" / "index.json").unlink()  # an operator who never signs
    change(store, Change("promote", "1.0.0", "stable"), signer=None)
    c = client(server, cache, public_key=None, allow_unverified=True)
    assert fetched(c, channel="stable") == "1.0.0"
    assert not (cache / "m" / MEMORY_NAME).exists()  # nothing remembered
    # with a trust root the unsigned index is refused, and nothing is remembered either
    with pytest.raises(IntegrityError, match="not signed"):
        client(server, cache).resolve("m", channel="stable")
    assert not (cache / "m" / MEMORY_NAME).exists()


def test_a_source_that_hides_its_index_after_one_was_verified_is_refused(
    store, server, tmp_path, caplog
) -> None:
    c = client(server, tmp_path / "cache")
    change(store, Change("promote", "1.0.0", "latest"))
    assert fetched(c) == "1.0.0"
    server.always(INDEX_PATH, Fault.status(404))  # back to the `latest` pointer (1.1.0)?
    with caplog.at_level(logging.WARNING, "pipeline.client"):
        assert fetched(c) == "1.0.0"
    assert "refusing to fall back to the unsigned 'latest' pointer" in caplog.text


def test_offline_latest_follows_the_remembered_index_not_the_newest_cached(
    store, server, tmp_path
) -> None:
    c = client(server, tmp_path / "cache")
    assert fetched(c) == "1.1.0"
    change(store, Change("promote", "1.0.0", "latest"))
    assert fetched(c) == "1.0.0"
    offline = client(server, tmp_path / "cache", offline=True)
    assert fetched(offline) == "1.0.0"
    # the version the index names is gone from the cache (pruned): the newest cached one, the
    # one rolled back from, is not served in its place
    shutil.rmtree(tmp_path / "cache" / "m" / "1.0.0")
    with pytest.raises(ArtifactNotFound, match="names 1.0.0 for channel 'latest'"):
        fetched(offline)


def test_prune_keeps_the_version_a_rollback_points_at(store, server, tmp_path, caplog) -> None:
    """`cache prune --keep 1` keeps the newest version and the one the remembered index's
    channels name: after a rollback to 1.0.0 that is the version servers use, offline too."""
    from pipeline.client.cache import Cache

    c = client(server, tmp_path / "cache")
    assert fetched(c) == "1.1.0"
    change(store, Change("promote", "1.0.0", "latest"))
    assert fetched(c) == "1.0.0"
    with caplog.at_level(logging.INFO, logger="pipeline"):
        removed = Cache(tmp_path / "cache").prune(keep=1)
    assert not [r for r in removed if r.startswith("m ")], removed
    assert "m 1.0.0 kept: the model index's channels name it" in caplog.text
    assert fetched(client(server, tmp_path / "cache", offline=True)) == "1.0.0"
    # rolled forward again: 1.0.0 is named by no channel any more and goes
    change(store, Change("promote", "1.1.0", "latest"))
    assert fetched(c) == "1.1.0"
    assert "m 1.0.0" in Cache(tmp_path / "cache").prune(keep=1)


def test_a_channel_needs_an_index(tmp_path) -> None:
    root = tmp_path / "store"
    release(root, tmp_path, "1.0.0")
    c = Client([LocalSource(root)], cache_dir=tmp_path / "cache")
    assert fetched(c) == "1.0.0"  # `latest` works as before
    with pytest.raises(ArtifactNotFound, match="no channel 'stable'"):
        c.resolve("m", channel="stable")


def test_an_idle_poll_is_one_request_answered_304(store, server) -> None:
    source = MirrorSource(server.url, http=Http(progress=False))
    first = read_index(source, "m")
    assert first.changed and first.validator.etag
    server.hits.clear()
    again = read_index(source, "m", first.validator)
    assert not again.changed
    assert [(h.path, h.status, h.sent) for h in server.hits] == [(INDEX_PATH, 304, 0)]
    change(store, Change("promote", "1.0.0", "stable"))
    assert read_index(source, "m", first.validator).changed
    # a host that ignores conditional requests costs the whole file, and still works
    server.conditional = False
    r = read_index(source, "m", Validator(etag='"x"'))
    assert r.changed and r.data == (store / "m" / "index.json").read_bytes()
    # Last-Modified alone (a server without ETags) is used when there is no ETag
    local = read_index(LocalSource(store), "m")
    assert not read_index(LocalSource(store), "m", local.validator).changed
