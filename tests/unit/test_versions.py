"""One version ordering for publishers, client and listings (pipeline/versions.py)."""

from __future__ import annotations

from pathlib import Path

from pipeline import versions
from pipeline.client import fetching, listing
from pipeline.client.cache import Cache
from pipeline.publishers.local import LocalStore
from tests.conftest import make_release_dir


def test_pep440_order_names_that_are_not_versions_first_and_a_total_order() -> None:
    names = ["1.10.0", "nightly", "1.9.0", "1.0.0rc1", "1.0.0", "1.0", "beta"]
    assert sorted(names, key=versions.version_key) == [
        "beta",
        "nightly",
        "1.0.0rc1",
        "1.0",
        "1.0.0",
        "1.9.0",
        "1.10.0",
    ]
    assert versions.newer("1.10.0", "1.9.0") and not versions.newer("1.9.0", "1.10.0")
    assert versions.newer("0.0.1", None) and not versions.newer("1.0.0", "1.0.0")


def test_the_client_orders_as_the_publishers_do(tmp_path: Path) -> None:
    assert fetching.version_key is versions.version_key is listing.version_key
    for v in ("1.0", "1.0.0", "1.10.0", "1.9.0"):
        (tmp_path / "cache" / "m" / v).mkdir(parents=True)
    assert Cache(tmp_path / "cache").versions("m") == ["1.10.0", "1.9.0", "1.0.0", "1.0"]


def test_latest_follows_the_one_order_for_two_spellings_of_a_version(tmp_path: Path) -> None:
    # 1.0 and 1.0.0 are one PEP 440 version; the client's rollback floor orders 1.0.0 after 1.0,
    # so the store's `latest` must not go back to 1.0 either (it did when the store compared
    # PEP 440 only, and a server that had verified 1.0.0 then refused `latest` as a rollback).
    store = LocalStore(tmp_path / "store")
    for v in ("1.0.0", "1.0"):
        m = make_release_dir(tmp_path / v, version=v)
        store.publish(tmp_path / v, m)
    assert store.latest("m") == "1.0.0"
    assert store.version_dir("m", "1.0") == versions.version_dir(tmp_path / "store", "m", "1.0")
