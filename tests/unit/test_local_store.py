from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from pipeline import manifest as mf
from pipeline.errors import IntegrityError, VersionExistsError
from pipeline.publishers.local import LocalStore
from tests.conftest import make_release_dir


def snapshot(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_first_publish_then_identical_is_a_noop(tmp_path: Path, release_dir) -> None:
    d, m = release_dir
    store = LocalStore(tmp_path / "store")
    r = store.publish(d, m)
    assert r.state == "done" and set(r.uploaded) == {f.name for f in m.files} | {mf.MANIFEST_NAME}
    target = store.version_dir("m", "1.0.0")
    assert mf.verify_dir(target) == m
    assert store.latest("m") == "1.0.0"
    store.verify(m)
    before = {p: p.stat().st_mtime_ns for p in target.iterdir()}
    r2 = store.publish(d, m)
    assert r2.state == "skipped" and not r2.uploaded
    assert {p: p.stat().st_mtime_ns for p in target.iterdir()} == before


def test_different_files_refused_unless_forced(tmp_path: Path, release_dir) -> None:
    d, m = release_dir
    store = LocalStore(tmp_path / "store")
    store.publish(d, m)
    other = make_release_dir(tmp_path / "other", payload=b"z")
    with pytest.raises(VersionExistsError, match="versions are immutable") as e:
        store.publish(tmp_path / "other", other)
    assert "export.pkl" in str(e.value) and e.value.exit_code == 3
    assert mf.Manifest.read(store.version_dir("m", "1.0.0")) == m  # untouched
    r = store.publish(tmp_path / "other", other, force=True)
    assert r.state == "done"
    assert mf.Manifest.read(store.version_dir("m", "1.0.0")) == other
    assert not list((tmp_path / "store" / "m").glob(".staging-*"))


def test_dry_run_touches_nothing(tmp_path: Path, release_dir) -> None:
    d, m = release_dir
    root = tmp_path / "store"
    r = LocalStore(root).publish(d, m, dry_run=True)
    assert r.state == "planned" and len(r.uploaded) == 4
    assert not root.exists()
    LocalStore(root).publish(d, m)
    snap = snapshot(root)
    other = make_release_dir(tmp_path / "other", payload=b"z")
    r = LocalStore(root).publish(tmp_path / "other", other, dry_run=True)
    assert r.refused and "report.md" in r.skipped
    assert snapshot(root) == snap


def test_latest_never_moves_backwards(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    for v in ("1.2.0", "1.10.0", "1.3.0"):
        m = make_release_dir(tmp_path / v, version=v)
        store.publish(tmp_path / v, m)
    assert store.latest("m") == "1.10.0"


def test_crash_mid_copy_leaves_no_half_release(tmp_path: Path, release_dir, monkeypatch) -> None:
    d, m = release_dir
    root = tmp_path / "store"
    calls = {"n": 0}
    real = shutil.copyfile

    def failing(src, dst, *a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(28, "No space left on device")
        return real(src, dst, *a, **k)

    monkeypatch.setattr(shutil, "copyfile", failing)
    with pytest.raises(OSError, match="No space"):
        LocalStore(root).publish(d, m)
    monkeypatch.setattr(shutil, "copyfile", real)
    assert not (root / "m" / "1.0.0").exists()
    assert not (root / "m" / "latest").exists()
    assert not list((root / "m").glob(".staging-*"))
    assert LocalStore(root).publish(d, m).state == "done"


def test_stale_staging_from_a_killed_publish_is_cleaned(tmp_path: Path, release_dir) -> None:
    d, m = release_dir
    stale = tmp_path / "store" / "m" / ".staging-1.0.0-deadbeef"
    stale.mkdir(parents=True)
    (stale / mf.ORIGINAL_FILE).write_bytes(b"half")
    LocalStore(tmp_path / "store").publish(d, m)
    assert not stale.exists()


def test_tampered_build_is_not_published(tmp_path: Path, release_dir) -> None:
    d, m = release_dir
    (d / mf.QUANTIZED_FILE).write_bytes(b"evil")
    with pytest.raises(IntegrityError):
        LocalStore(tmp_path / "store").publish(d, m)
    assert not (tmp_path / "store").exists()
