from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline import manifest as mf
from pipeline.client import LocalSource, fetch
from pipeline.errors import ArtifactNotFound, IntegrityError
from pipeline.publishers.local import LocalStore


@pytest.fixture
def store(tmp_path: Path, release_dir) -> tuple[Path, mf.Manifest]:
    d, m = release_dir
    LocalStore(tmp_path / "store").publish(d, m)
    return tmp_path / "store", m


def test_fetch_latest_verifies_and_caches(tmp_path: Path, store) -> None:
    root, m = store
    cache = tmp_path / "cache"
    results = fetch("m", sources=[LocalSource(root)], cache_dir=cache)
    assert [r.variant for r in results] == ["quantized", "original"]
    assert results[0].path == cache / "m" / "1.0.0" / mf.QUANTIZED_FILE and not results[0].cache_hit
    assert mf.check_file(results[0].path, m.variant("quantized")) is None
    assert mf.Manifest.read(cache / "m" / "1.0.0") == m
    again = fetch("m", "1.0.0", sources=[LocalSource(root)], cache_dir=cache)
    assert again[0].cache_hit


def test_corrupt_source_is_rejected_and_next_source_used(tmp_path: Path, store) -> None:
    root, m = store
    bad = tmp_path / "bad"
    bad_dir = bad / "m" / "1.0.0"
    bad_dir.mkdir(parents=True)
    for p in (root / "m" / "1.0.0").iterdir():
        bad_dir.joinpath(p.name).write_bytes(p.read_bytes())
    (bad / "m" / "latest").write_text("1.0.0\n")
    data = bytearray((bad_dir / mf.QUANTIZED_FILE).read_bytes())
    data[0] ^= 0xFF
    (bad_dir / mf.QUANTIZED_FILE).write_bytes(bytes(data))
    cache = tmp_path / "cache"
    with pytest.raises(IntegrityError, match="blake3"):
        fetch("m", sources=[LocalSource(bad)], variants=["quantized"], cache_dir=cache)
    assert not list((cache / "m" / "1.0.0").glob("*.part"))
    assert not (cache / "m" / "1.0.0" / mf.QUANTIZED_FILE).exists()
    results = fetch(
        "m", sources=[LocalSource(bad), LocalSource(root)], variants=["quantized"], cache_dir=cache
    )
    assert results[0].source == f"local:{root}"


def test_missing_variant_falls_back(tmp_path: Path, store) -> None:
    root, _ = store
    (root / "m" / "1.0.0" / mf.QUANTIZED_FILE).unlink()
    results = fetch("m", sources=[LocalSource(root)], cache_dir=tmp_path / "c")
    assert [r.variant for r in results] == ["original"]


def test_nothing_anywhere(tmp_path: Path) -> None:
    with pytest.raises(ArtifactNotFound, match="no source could provide"):
        fetch("m", sources=[LocalSource(tmp_path)], cache_dir=tmp_path / "c")


def test_client_imports_no_torch_fastai_or_click() -> None:
    code = "import sys, json, pipeline.client; print(json.dumps([m for m in ('torch', 'fastai', 'click') if m in sys.modules]))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert json.loads(out) == []
