from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from pipeline import manifest as mf

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def make_release_dir(
    directory: Path, model: str = "m", version: str = "1.0.0", payload: bytes = b"q"
) -> mf.Manifest:
    """A release directory with small fake files and a valid manifest (no torch needed)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / mf.ORIGINAL_FILE).write_bytes(b"original-" + payload * 100)
    (directory / mf.QUANTIZED_FILE).write_bytes(b"quantized-" + payload * 10)
    (directory / "report.md").write_text("# report\n")
    entries = (
        mf.file_entry(directory / mf.ORIGINAL_FILE, "original"),
        mf.file_entry(directory / mf.QUANTIZED_FILE, "quantized"),
        mf.file_entry(directory / "report.md", kind="report"),
    )
    m = mf.Manifest(
        model=model,
        version=version,
        labels=("a", "b"),
        files=entries,
        environment={"python": "3.11.7"},
        created="2026-01-01T00:00:00Z",
        golden_queries=(mf.GoldenQuery("hello", "a"),),
    )
    m.write(directory)
    return m


@pytest.fixture
def release_dir(tmp_path: Path) -> tuple[Path, mf.Manifest]:
    d = tmp_path / "build"
    return d, make_release_dir(d)


def write_config(directory: Path, text: str | None = None, **overrides: str) -> Path:
    """A copy of the tiny test config in `directory` (or `text`), with build/publish under it."""
    directory.mkdir(parents=True, exist_ok=True)
    body = text if text is not None else (FIXTURES / "tiny.toml").read_text()
    path = directory / "release.toml"
    path.write_text(body)
    return path


@pytest.fixture
def repo_root() -> Path:
    return ROOT


def copy_tree(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst
