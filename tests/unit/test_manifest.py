from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline import manifest as mf
from pipeline.errors import ArtifactNotFound, InputError, IntegrityError


def test_roundtrip_and_verify(release_dir) -> None:
    d, m = release_dir
    again = mf.Manifest.read(d)
    assert again == m
    assert mf.verify_dir(d) == m
    assert again.variant("quantized").name == mf.QUANTIZED_FILE
    assert json.loads((d / mf.MANIFEST_NAME).read_text())["schema_version"] == mf.SCHEMA_VERSION


def test_tampered_file_fails_with_names_and_digests(release_dir) -> None:
    d, _ = release_dir
    data = bytearray((d / mf.QUANTIZED_FILE).read_bytes())
    data[3] ^= 1
    (d / mf.QUANTIZED_FILE).write_bytes(bytes(data))
    (d / "report.md").unlink()
    with pytest.raises(IntegrityError) as e:
        mf.verify_dir(d)
    msg = str(e.value)
    assert "2 of 3 files do not match" in msg
    assert f"{mf.QUANTIZED_FILE}: blake3" in msg and "manifest says" in msg
    assert "report.md: missing" in msg


def test_size_mismatch_reported_before_hashing(release_dir) -> None:
    d, _ = release_dir
    (d / mf.ORIGINAL_FILE).write_bytes(b"short")
    with pytest.raises(IntegrityError, match="export.pkl: 5 bytes, manifest says"):
        mf.verify_dir(d)


def test_no_manifest(tmp_path: Path) -> None:
    with pytest.raises(ArtifactNotFound, match="no manifest"):
        mf.Manifest.read(tmp_path)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (
            lambda d: d["files"][0].update(name="../../etc/passwd"),
            "files\\[0\\].name: expected a plain file name",
        ),
        (
            lambda d: d["files"][0].update(blake3="abc"),
            "files\\[0\\].blake3: expected 64 lowercase hex digits",
        ),
        (lambda d: d["files"][0].update(size=-1), "files\\[0\\].size"),
        (lambda d: d.pop("model"), "model: missing"),
        (lambda d: d.update(schema_version=99), "upgrade fastai-release"),
    ],
)
def test_malformed_manifest_rejected(release_dir, mutate, message) -> None:
    d, m = release_dir
    data = m.to_dict()
    mutate(data)
    with pytest.raises(InputError, match=message):
        mf.Manifest.from_dict(data)


def test_not_json() -> None:
    with pytest.raises(InputError, match="not valid JSON"):
        mf.Manifest.from_json(b"\xff{")
