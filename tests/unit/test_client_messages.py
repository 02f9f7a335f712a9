"""The client's messages say the next step (issue 28, item 7): a missing release, a cached file
that changed after it was verified, a variant missing while offline."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline import manifest as mf
from pipeline.client import Client, LocalSource
from pipeline.client.release import read_verified
from pipeline.errors import ArtifactNotFound, IntegrityError
from tests.conftest import make_release_dir


@pytest.fixture
def store(tmp_path: Path) -> Path:
    root = tmp_path / "store"
    make_release_dir(root / "m" / "1.0.0")
    (root / "m" / "latest").write_text("1.0.0\n")
    return root


def test_a_release_no_source_has_says_how_to_see_what_a_source_offers(
    store: Path, tmp_path: Path
) -> None:
    client = Client([LocalSource(store)], cache_dir=tmp_path / "c")
    with pytest.raises(ArtifactNotFound) as e:
        client.fetch("other")
    text = str(e.value)
    assert "no release of 'other' (no other/latest); check the model name" in text
    assert "`release list other --source SOURCE` shows what a source offers" in text
    with pytest.raises(ArtifactNotFound, match=r"release list m --source .*store` shows what"):
        client.fetch("m", "9.9.9")


def test_a_cached_file_changed_after_it_was_verified_says_what_to_run(
    store: Path, tmp_path: Path
) -> None:
    fetched = Client([LocalSource(store)], cache_dir=tmp_path / "c").fetch(
        "m", variants=["quantized"]
    )
    entry = fetched.manifest.variant("quantized")
    fetched.path.write_bytes(b"x" * entry.size)  # same size, other bytes
    with pytest.raises(IntegrityError, match="`release cache verify` lists what is damaged"):
        read_verified(fetched.path, entry)
    fetched.path.unlink()
    with pytest.raises(IntegrityError, match="the next fetch downloads it again"):
        read_verified(fetched.path, entry)


def test_a_variant_missing_offline_names_the_command_that_fetches_it(
    store: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "c"
    Client([LocalSource(store)], cache_dir=cache).fetch("m", "1.0.0", variants=["quantized"])
    offline = Client([LocalSource(store)], cache_dir=cache, offline=True)
    release = offline.resolve("m", "1.0.0", variants=["quantized"])  # what is cached
    with pytest.raises(ArtifactNotFound) as e:
        release.file("original")
    assert f"`release fetch m --version 1.0.0 --variant original --cache-dir {cache}`" in str(
        e.value
    )
    assert mf.ORIGINAL_FILE in str(e.value)
