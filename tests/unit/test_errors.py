"""The error hierarchy: the built-ins a library user catches, the exit codes that match a cause,
and the broad `except OSError` of the cache that must not swallow a remote failure."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from pipeline.client.cache import Cache, CacheBusy, os_errors
from pipeline.client.network import CacheError, Unreachable
from pipeline.client.trust import Untrusted
from pipeline.errors import ArtifactNotFound, IntegrityError, RemoteError, first_line
from pipeline.publishers.remote import classify_github


def test_errors_users_catch_are_the_builtins_of_their_kind() -> None:
    assert isinstance(IntegrityError("x"), ValueError)
    assert isinstance(Untrusted("x"), ValueError) and Untrusted("x").exit_code == 5
    assert isinstance(RemoteError("x"), OSError) and RemoteError("x").exit_code == 6
    assert isinstance(Unreachable("x"), OSError)
    # an HTTP 404 or a refused token is not a broken connection (and those are retried)
    assert not isinstance(RemoteError("x"), ConnectionError)
    assert classify_github(RemoteError("the token was rejected")) is None
    assert isinstance(ArtifactNotFound("x"), FileNotFoundError)
    assert str(RemoteError("one line")) == "one line" and RemoteError("x").errno is None


def test_a_held_cache_lock_is_a_busy_cache_not_a_remote_failure(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache")
    held, release = threading.Event(), threading.Event()

    def reader() -> None:  # another process would do the same: hold the cache while loading
        with cache.in_use():
            held.set()
            release.wait(10)

    t = threading.Thread(target=reader)
    t.start()
    try:
        assert held.wait(10)
        with pytest.raises(CacheBusy) as e:
            Cache(tmp_path / "cache").prune(keep=0, wait=0)
    finally:
        release.set()
        t.join()
    assert e.value.exit_code == 3  # was 6 ("remote"): nothing remote is involved
    assert isinstance(e.value, CacheError) and isinstance(e.value, TimeoutError)
    assert not isinstance(e.value, RemoteError)
    assert "run `release cache prune` again when they are done" in str(e.value)


def test_the_cache_turns_os_errors_into_cache_errors_but_lets_remote_errors_through(
    tmp_path: Path,
) -> None:
    with pytest.raises(CacheError, match="no such thing"), os_errors("reading", tmp_path):
        raise FileNotFoundError(2, "no such thing")
    # an OSError too, now: it must stay what it is
    with pytest.raises(Unreachable) as e, os_errors("downloading", tmp_path):
        raise Unreachable("mirror: connection refused")
    assert type(e.value) is Unreachable and e.value.exit_code == 6


def test_first_line_is_one_line_of_at_most_300_characters() -> None:
    assert first_line(ValueError("  first\nsecond")) == "first"
    assert first_line(ValueError("x" * 400)) == "x" * 300
    assert first_line(ValueError(""), "ValueError") == "ValueError"


def test_not_found_and_unreadable_say_what_to_do(tmp_path: Path) -> None:
    from pipeline.client.fetching import read_verified
    from pipeline.client.sources import LocalSource
    from pipeline.manifest import FileEntry

    source = LocalSource(tmp_path)
    with pytest.raises(ArtifactNotFound, match=r"check the model name.*release list m --source"):
        source.read_bytes("m", "1.0.0", "manifest.json")
    with pytest.raises(ArtifactNotFound, match=r"`release publish --target local`"):
        source.latest("m")
    (tmp_path / "export.pkl").mkdir()  # not readable as a file
    entry = FileEntry("export.pkl", 1, "0" * 64, "original")
    with pytest.raises(IntegrityError, match=r"cannot be read .*`release cache verify`"):
        read_verified(tmp_path / "export.pkl", entry)
