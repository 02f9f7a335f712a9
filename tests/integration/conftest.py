"""Fixtures shared by the integration tests."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from pipeline import config as cfg
from pipeline import manifest as mf
from pipeline.build import build
from tests.conftest import FIXTURES


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> tuple[Path, mf.Manifest]:
    """One trained tiny release shared by the tests (they copy before they change anything)."""
    work = tmp_path_factory.mktemp("tiny")
    shutil.copy(FIXTURES / "tiny.toml", work / "release.toml")
    manifest = build(cfg.load(work / "release.toml"))
    return work, manifest
