from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from pipeline import manifest as mf
from pipeline import signing

# huggingface_hub reads these at import (../shared/TESTING.md): no test may reach huggingface.co
# (HF_ENDPOINT: a closed local port unless a test passes its emulator's URL), uploads take the
# LFS path an emulator can serve (no Xet), and nothing lands in the user's HF cache. Real tokens
# from the developer's or CI's environment are never used by a test.
_HF_HOME = tempfile.mkdtemp(prefix="release-tests-hf-home-")
atexit.register(shutil.rmtree, _HF_HOME, ignore_errors=True)
os.environ.update(
    HF_ENDPOINT="http://127.0.0.1:9",
    HF_HUB_DISABLE_TELEMETRY="1",
    HF_HUB_DISABLE_XET="1",
    HF_HOME=_HF_HOME,
)
for _secret in (
    "HF_TOKEN",
    "GITHUB_TOKEN",
    "GH_TOKEN",
    "RELEASE_SIGNING_KEY",
    "RELEASE_SIGNING_CERTIFICATE",
    "RELEASE_SIGNING",
    "GITHUB_API_URL",
    "RELEASE_PUBLIC_KEY",
    "RELEASE_PIN",
    "RELEASE_ALLOW_UNVERIFIED",
    "RELEASE_SOURCES",
):
    os.environ.pop(_secret, None)
# boto3: no real AWS credentials, profiles or endpoints, and no instance-metadata lookup (a
# request to 169.254.169.254); tests that use S3 set fake credentials and the emulator's URL.
for _aws in [k for k in os.environ if k.startswith("AWS_")]:
    os.environ.pop(_aws, None)
os.environ.update(
    AWS_CONFIG_FILE=os.devnull,
    AWS_SHARED_CREDENTIALS_FILE=os.devnull,
    AWS_EC2_METADATA_DISABLED="true",
)

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


# One signing key for the tests' releases (servers in the tests trust its public half).
KEY = signing.generate()


def sign_dir(
    directory: Path, manifest: mf.Manifest | None = None, key: signing.KeyPair = KEY
) -> bytes:
    """Sign a release directory as `release publish` does (model.sig); return the bundle."""
    manifest = manifest or mf.Manifest.read(directory)
    bundle = signing.Signer("key", key.private_pem.encode()).sign(directory, manifest)
    (Path(directory) / mf.SIGNATURE_NAME).write_bytes(bundle)
    return bundle


def signed_release(directory: Path) -> tuple[mf.Manifest, dict[str, bytes]]:
    """A release of `m` 1.0.0 (model files of 10,240 bytes) in `directory`, signed by KEY: its
    manifest and its files by name (what a test puts on a host emulator)."""
    m = make_release_dir(directory, "m", "1.0.0", payload=bytes(range(256)) * 40)
    sign_dir(directory, m)
    return m, {p.name: p.read_bytes() for p in directory.iterdir() if p.is_file()}


def manifest_pin(directory: Path) -> str:
    """The blake3 of a release directory's manifest.json (what --pin takes)."""
    return mf.blake3_file(Path(directory) / mf.MANIFEST_NAME)


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
