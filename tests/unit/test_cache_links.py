"""Issue 27, finding 4: the cache follows no symbolic link (against a local process that can
write the cache). Each proof of concept of the audit, and the install and read paths: a link
planted in the cache is a CacheError (exit 3) naming it, and nothing outside the cache is
written, created, read or deleted. No network, no torch."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipeline import atomic
from pipeline import manifest as mf
from pipeline.cli import cli
from pipeline.client import Cache, CacheError, LocalSource, fetch
from pipeline.client.fetching import read_verified
from pipeline.errors import RemoteError
from pipeline.publishers.local import LocalStore
from tests.conftest import make_release_dir

VICTIM = b"a file outside the cache, which must stay as it is\n"


@pytest.fixture
def store(tmp_path: Path) -> tuple[Path, mf.Manifest]:
    d = tmp_path / "build"
    m = make_release_dir(d, "m", "1.0.0")
    LocalStore(tmp_path / "store").publish(d, m)
    return tmp_path / "store", m


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    d = tmp_path / "outside"
    d.mkdir()
    (d / "victim").write_bytes(VICTIM)
    return d


def _fetch(store: Path, cache: Path):  # noqa: ANN202
    return fetch("m", sources=[LocalSource(store)], cache_dir=cache, variants=["quantized"])


def _cli(*args: str):  # noqa: ANN202
    return CliRunner().invoke(cli, list(args))


# -- the audit's three proofs of concept --------------------------------------------------------


def test_a_part_file_link_is_refused_and_the_file_outside_is_untouched(
    tmp_path: Path, store, outside: Path
) -> None:
    root, m = store
    cache = tmp_path / "c"
    part = Cache(cache).part(m.variant("quantized").blake3)
    part.parent.mkdir(parents=True)
    part.symlink_to(outside / "victim")
    with pytest.raises(CacheError) as e:
        _fetch(root, cache)
    assert str(part) in str(e.value) and "symbolic link" in str(e.value)
    assert "remove it" in str(e.value)
    assert (outside / "victim").read_bytes() == VICTIM
    out = _cli("fetch", "m", "-s", str(root), "--cache-dir", str(cache))
    assert out.exit_code == 3 and str(part) in out.output and "Traceback" not in out.output
    part.unlink()  # the next step the message names
    assert _fetch(root, cache).path.is_file()


def test_prune_through_a_model_link_deletes_nothing_outside(
    tmp_path: Path, store, outside: Path
) -> None:
    cache = tmp_path / "c"
    for v in ("1.0.0", "2.0.0", "3.0.0"):  # what a cache's version directories look like
        (outside / v).mkdir()
        (outside / v / "keep.txt").write_text(v)
    cache.mkdir()
    (cache / "m").symlink_to(outside, target_is_directory=True)
    with pytest.raises(CacheError, match="symbolic link"):
        Cache(cache).prune(keep=0)
    out = _cli("cache", "prune", "--keep", "1", "--cache-dir", str(cache))
    assert out.exit_code == 3 and str(cache / "m") in out.output, out.output
    assert sorted(p.name for p in outside.iterdir()) == ["1.0.0", "2.0.0", "3.0.0", "victim"]


def test_prune_refuses_a_link_anywhere_it_would_delete_before_deleting_anything(
    tmp_path: Path, store, outside: Path
) -> None:
    root, m = store
    cache = tmp_path / "c"
    _fetch(root, cache)
    for link in (
        cache / "m" / "0.9.0",  # an old "version"
        cache / ".partial" / "hf",  # huggingface_hub's cache, which prune empties
        cache / ".blobs" / ("0" * 64),
    ):
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(outside, target_is_directory=True)
        with pytest.raises(CacheError, match="symbolic link") as e:
            Cache(cache).prune(keep=0)
        assert str(link) in str(e.value)
        assert (cache / "m" / "1.0.0" / mf.QUANTIZED_FILE).is_file()  # nothing was removed
        assert (outside / "victim").read_bytes() == VICTIM
        link.unlink()
    assert Cache(cache).prune(keep=0) == ["m 1.0.0", f".blobs/{m.variant('quantized').blake3}"]


@pytest.mark.parametrize("name", ["cache.lock", "LOCK"])
def test_a_lock_file_link_creates_nothing_elsewhere(
    tmp_path: Path, store, outside: Path, name: str
) -> None:
    root, m = store
    cache = tmp_path / "c"
    lock = cache / ".locks" / (name if name != "LOCK" else f"{m.variant('quantized').blake3}.lock")
    lock.parent.mkdir(parents=True)
    lock.symlink_to(outside / "created-by-the-server")
    with pytest.raises(CacheError, match="symbolic link") as e:
        _fetch(root, cache)
    assert str(lock) in str(e.value)
    if name == "cache.lock":
        with pytest.raises(CacheError, match="symbolic link"):
            Cache(cache).prune()
    assert not (outside / "created-by-the-server").exists()


def test_a_locks_directory_link_is_refused(tmp_path: Path, store, outside: Path) -> None:
    root, _ = store
    cache = tmp_path / "c"
    cache.mkdir()
    (cache / ".locks").symlink_to(outside, target_is_directory=True)
    with pytest.raises(CacheError, match="symbolic link"):
        _fetch(root, cache)
    assert sorted(p.name for p in outside.iterdir()) == ["victim"]


# -- installs ------------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["blobs", "partial", "model", "version"])
def test_a_directory_link_on_the_install_path_is_refused(
    tmp_path: Path, store, outside: Path, where: str
) -> None:
    root, _ = store
    cache = tmp_path / "c"
    link = {
        "blobs": cache / ".blobs",
        "partial": cache / ".partial",
        "model": cache / "m",
        "version": cache / "m" / "1.0.0",
    }[where]
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(outside, target_is_directory=True)
    with pytest.raises(CacheError, match="symbolic link") as e:
        _fetch(root, cache)
    assert str(link) in str(e.value)
    assert sorted(p.name for p in outside.iterdir()) == ["victim"]  # nothing written there
    out = _cli("cache", "list", "--cache-dir", str(cache))  # nor read from there
    assert out.exit_code == 3 and str(link) in out.output, out.output


def test_a_blob_link_is_not_installed_and_a_file_link_is_not_read(
    tmp_path: Path, store, outside: Path
) -> None:
    root, m = store
    entry = m.variant("quantized")
    cache = tmp_path / "c"
    # a blob that is a link to a file with the right content: still refused (never followed)
    (outside / "copy").write_bytes((root / "m" / "1.0.0" / entry.name).read_bytes())
    blob = Cache(cache).blob(entry.blake3)
    blob.parent.mkdir(parents=True)
    blob.symlink_to(outside / "copy")
    with pytest.raises(CacheError, match="symbolic link"):
        _fetch(root, cache)
    blob.unlink()
    r = _fetch(root, cache)
    # an installed file swapped for a link: found by the next start, and by the loader's read
    r.path.unlink()
    r.path.symlink_to(outside / "copy")
    with pytest.raises(CacheError, match="symbolic link") as e:
        _fetch(root, cache)
    assert str(r.path) in str(e.value)
    with pytest.raises(CacheError, match="symbolic link"):
        read_verified(r.path, entry)


# -- reads ---------------------------------------------------------------------------------------


def test_a_manifest_or_signature_link_is_not_read(tmp_path: Path, store, outside: Path) -> None:
    root, _ = store
    cache = tmp_path / "c"
    _fetch(root, cache)
    for name in (mf.MANIFEST_NAME, mf.SIGNATURE_NAME):
        f = cache / "m" / "1.0.0" / name
        f.unlink(missing_ok=True)
        f.symlink_to(outside / "victim")
        with pytest.raises(CacheError, match="symbolic link") as e:
            Cache(cache).read_version("m", "1.0.0")
        assert str(f) in str(e.value)
        f.unlink()
        if name == mf.MANIFEST_NAME:
            f.write_bytes((root / "m" / "1.0.0" / name).read_bytes())
    out = _cli("cache", "verify", "--cache-dir", str(cache))
    assert out.exit_code == 0, out.output


# -- the writers themselves, when a link is planted after the cache's check ------------------


def test_open_nofollow_refuses_links_to_the_file_and_its_directory(
    tmp_path: Path, outside: Path
) -> None:
    (tmp_path / "f").symlink_to(outside / "victim")
    (tmp_path / "d").symlink_to(outside, target_is_directory=True)
    for path, mode in [
        (tmp_path / "f", "wb"),
        (tmp_path / "f", "ab"),
        (tmp_path / "f", "r+b"),
        (tmp_path / "f", "rb"),
        (tmp_path / "f", "xb"),
        (tmp_path / "d" / "victim", "wb"),
        (tmp_path / "d" / "new", "xb"),
    ]:
        with pytest.raises(OSError) as e:
            atomic.open_nofollow(path, mode)
        assert e.value.errno == errno.ELOOP, (path, mode, e.value)
    assert (outside / "victim").read_bytes() == VICTIM and not (outside / "new").exists()
    with atomic.open_nofollow(tmp_path / "plain", "xb") as f:
        f.write(b"ok")
    assert (tmp_path / "plain").read_bytes() == b"ok"


def test_the_sources_writers_do_not_follow_a_part_link(
    tmp_path: Path, store, outside: Path
) -> None:
    from pipeline.client import Http, MirrorSource
    from tests.mirror_server import MirrorServer

    # a link to a file that does not exist yet: open(part, "wb") would create it out there
    root, m = store
    entry = m.variant("quantized")
    part = tmp_path / "x.part"
    part.symlink_to(outside / "created-by-the-server")
    with pytest.raises(OSError) as e:
        LocalSource(root).download("m", "1.0.0", entry.name, part, entry.size)
    assert e.value.errno == errno.ELOOP
    with MirrorServer(root) as server:
        source = MirrorSource(server.url, http=Http(progress=False))
        with pytest.raises(RemoteError) as r:  # the retry policy wraps what it cannot classify
            source.download("m", "1.0.0", entry.name, part, entry.size)
    assert isinstance(r.value.__cause__, OSError) and r.value.__cause__.errno == errno.ELOOP
    assert sorted(p.name for p in outside.iterdir()) == ["victim"]


@pytest.mark.parametrize("via", ["directory", "mirror"])
def test_a_part_file_with_another_name_is_refused_and_the_file_outside_is_untouched(
    tmp_path: Path, store, outside: Path, via: str
) -> None:
    """A hard link planted as the partial download (to a file the server can write, anywhere on
    the same disk): appending to it, or truncating it when a server ignores the Range request,
    would change that file. Refused (exit 3, named) before a byte is written."""
    from pipeline.client import Http, MirrorSource
    from tests.mirror_server import MirrorServer

    root, m = store
    cache = tmp_path / "c"
    part = Cache(cache).part(m.variant("quantized").blake3)
    part.parent.mkdir(parents=True)
    os.link(outside / "victim", part)
    with MirrorServer(root) as server:
        source = LocalSource(root) if via == "directory" else MirrorSource(server.url, http=Http())
        with pytest.raises(CacheError) as e:
            fetch(
                "m",
                sources=[source],
                cache_dir=cache,
                variants=["quantized"],
                allow_unverified=True,  # the pickle from a mirror: past the trust check
            )
    assert str(part) in str(e.value) and "hard link" in str(e.value) and "remove it" in str(e.value)
    assert (outside / "victim").read_bytes() == VICTIM
    out = _cli("fetch", "m", "-s", str(root), "--cache-dir", str(cache))
    assert out.exit_code == 3 and str(part) in out.output and "Traceback" not in out.output
    part.unlink()  # the next step the message names
    assert _fetch(root, cache).path.is_file()
    assert (outside / "victim").read_bytes() == VICTIM


@pytest.mark.parametrize("mode", ["wb", "ab", "r+b"])
def test_the_part_writers_open_refuses_a_second_name_before_truncating(
    tmp_path: Path, outside: Path, mode: str
) -> None:
    part = tmp_path / "x.part"
    os.link(outside / "victim", part)
    with pytest.raises(OSError) as e:
        atomic.open_unshared(part, mode)
    assert e.value.errno == errno.EMLINK and e.value.filename == str(part)
    assert (outside / "victim").read_bytes() == VICTIM
    part.unlink()
    (tmp_path / "y.part").write_bytes(b"old")
    with atomic.open_unshared(tmp_path / "y.part", "wb") as f:  # one name: truncated as asked
        f.write(b"new")
    assert (tmp_path / "y.part").read_bytes() == b"new"


def test_staged_dir_nofollow_renames_and_deletes_only_inside_its_parent(
    tmp_path: Path, outside: Path
) -> None:
    (outside / "v").mkdir()
    (tmp_path / "parent").symlink_to(outside, target_is_directory=True)
    with pytest.raises(OSError) as e, atomic.staged_dir(tmp_path / "parent" / "v", nofollow=True):
        pass
    assert e.value.errno == errno.ELOOP and (outside / "v").is_dir()
    real = tmp_path / "real"
    real.mkdir()
    (real / "v").symlink_to(outside / "v", target_is_directory=True)
    with pytest.raises(OSError) as e, atomic.staged_dir(real / "v", nofollow=True) as staging:
        (staging / "f").write_text("new")
    assert e.value.errno == errno.ELOOP and (outside / "v").is_dir()
    assert [p.name for p in real.iterdir()] == ["v"]  # the staging directory was removed
    os.unlink(real / "v")
    with atomic.staged_dir(real / "v", nofollow=True) as staging:
        (staging / "f").write_text("new")
    assert (real / "v" / "f").read_text() == "new"
