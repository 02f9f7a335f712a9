"""A real (tiny) release on the Hub emulator, loaded the three ways its model card shows:
huggingface_hub's own `from_pretrained_fastai` (what the Hub shows for `library_name: fastai`),
fastai-release's verified `load_model`, and the onnx variant in a process where torch and
fastai cannot be imported. Each runs in a fresh interpreter with HF_ENDPOINT pointing at the
emulator, as a Hub visitor's would; the card's own code blocks are what runs."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline import manifest as mf
from pipeline.config import HubTarget
from pipeline.publishers.huggingface import HubPublisher
from pipeline.publishers.settings import PublishSettings
from pipeline.retry import RetryPolicy
from tests.conftest import ROOT
from tests.emulators.huggingface import HubEmulator

pytestmark = pytest.mark.slow
TOKEN = "hf_fastaiTOKEN0123456789"
REPO = "acme/tiny-intent"
NO_TORCH = (
    "import sys\n"
    "for _m in ('torch', 'fastai', 'fastcore', 'spacy'):\n"
    "    sys.modules[_m] = None  # any import of them raises ImportError\n"
)


def python(code: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture
def published(tiny, tmp_path):
    work, manifest = tiny
    with HubEmulator(tokens={TOKEN: "alice"}, orgs={"alice": ["acme"]}) as hub:
        publisher = HubPublisher(
            HubTarget(REPO, private=False),
            PublishSettings(hf_token=TOKEN, hf_endpoint=hub.url),
            policy=RetryPolicy(max_attempts=2, sleep=lambda s: None),
        )
        result = publisher.publish(work / "artifacts" / "build" / manifest.version, manifest)
        assert result.state == "done" and result.verified
        env = {
            **os.environ,
            "HF_ENDPOINT": hub.url,
            "HF_HOME": str(tmp_path / "hf-home"),
            "RELEASE_CACHE_DIR": str(tmp_path / "release-cache"),
            "PYTHONPATH": str(ROOT),
        }
        env.pop("HF_TOKEN", None)  # a public repo: what any visitor can do
        yield hub, manifest, env
    assert hub.errors == []


def card_snippets(card: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", card, flags=re.S)


def test_from_pretrained_fastai_loads_the_quantized_learner_and_predicts(
    published, tmp_path
) -> None:
    hub, manifest, env = published
    files = hub.files(REPO, "v0.0.1")
    assert files["model.pkl"] == files[mf.QUANTIZED_FILE]
    assert mf.ORIGINAL_FILE not in files  # 6x the quantized size: kept off the snapshot
    pyproject = files["pyproject.toml"].decode()
    env_versions = manifest.environment
    assert f'"fastai={env_versions["fastai"]}"' in pyproject
    assert f'"fastcore={env_versions["fastcore"]}"' in pyproject

    # bytes stored for the extra name: none (LFS is content-addressed, one object per content)
    lfs_names = [n for n in files if n.endswith((".pkl", ".png")) or len(files[n]) > 10 << 20]
    distinct = {files[n] for n in lfs_names}
    assert hub.stored_bytes() == sum(len(b) for b in distinct)

    card = files["README.md"].decode()
    snippets = card_snippets(card)
    assert len(snippets) == 3, card
    query = manifest.golden_queries[0]
    hub.clear_log()
    proc = python(snippets[0], env, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"('{query.expected}'," in proc.stdout, proc.stdout
    assert "There is no `pyproject.toml`" not in proc.stderr

    # What the snapshot pulled: every file of the revision, each once (model.pkl's blob is
    # export_quantized.pkl's, so huggingface_hub's cache holds it once too).
    gets = [e for e in hub.log if e.method == "GET" and "/resolve/" in e.path]
    pulled = sorted(e.path.rsplit("/", 1)[-1] for e in gets)
    assert sorted(pulled) == sorted(set(pulled))
    blobs = list((tmp_path / "hf-home" / "hub").glob("models--acme--tiny-intent/blobs/*"))
    print(
        f"\nfrom_pretrained_fastai pulled {len(gets)} GETs, {sum(e.sent for e in gets)} bytes "
        f"({len(files)} files in the revision, {sum(map(len, files.values()))} bytes; "
        f"{len(blobs)} blobs, {sum(b.stat().st_size for b in blobs)} bytes in its cache): "
        + ", ".join(pulled)
    )
    assert sum(b.stat().st_size for b in blobs) == sum(map(len, files.values())) - len(
        files["model.pkl"]
    )


def test_the_cards_verified_and_onnx_ways_load_and_predict(published, tmp_path) -> None:
    hub, manifest, env = published
    snippets = card_snippets(hub.files(REPO, "v0.0.1")["README.md"].decode())
    query = manifest.golden_queries[0]

    verified = python(snippets[1], env, tmp_path)
    assert verified.returncode == 0, verified.stderr[-3000:]
    assert verified.stdout.split() == [query.expected, "quantized"]

    onnx = python(NO_TORCH + snippets[2], env, tmp_path)
    assert onnx.returncode == 0, onnx.stderr[-3000:]
    assert onnx.stdout.split() == [query.expected, "onnx"]
