"""Real multi-process races on one cache directory (finding 8): processes installing different
versions of one model, and `cache prune` running against a process that downloads, installs and
reads. Each worker is a separate Python process using the public Cache API as fetch does."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

WORKER = r"""
import json, sys, time
from pathlib import Path
from pipeline.checksums import blake3_bytes
from pipeline.client.cache import Cache
from pipeline.manifest import FileEntry

root, role, tag, n = Path(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
cache = Cache(root, lock_timeout=60)
if role == "prune":
    removed = 0
    deadline = time.monotonic() + n
    while time.monotonic() < deadline:
        removed += len(cache.prune(keep=0, wait=30))
    print(f"pruned {removed}")
    sys.exit(0)
for i in range(n):
    version = f"{tag}.{i}"
    # "install": one blob for every version; "fresh": a new blob per version, so it is not
    # linked anywhere between its download and its install (what prune would delete)
    data = b"model bytes" if role == "install" else f"{tag} {i} ".encode() * 100
    entry = FileEntry("export_quantized.pkl", len(data), blake3_bytes(data), "quantized")
    manifest = json.dumps({"model": "m", "version": version}).encode()
    with cache.in_use():
        blob, _ = cache.ensure_blob(entry, lambda part: part.write_bytes(data), version)
        path = cache.install("m", version, manifest, None, entry, blob)
        assert path.read_bytes() == data, version  # a reader never sees a missing file
    if role == "fresh":
        time.sleep(0.005)
print("ok")
"""


def _spawn(root: Path, role: str, tag: str, n: int) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", WORKER, str(root), role, tag, str(n)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(proc: subprocess.Popen) -> str:
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-3000:]
    return out


def test_installing_one_version_never_removes_anothers_staging_dir(tmp_path: Path) -> None:
    # Before: each install removed every `.staging-*` directory of the model, including the one
    # another process was filling for another version (FileNotFoundError on its rename).
    procs = [_spawn(tmp_path, "install", tag, 150) for tag in ("a", "b", "c")]
    for p in procs:
        assert _finish(p).strip() == "ok"
    versions = sorted(p.name for p in (tmp_path / "m").iterdir() if not p.name.startswith("."))
    assert len(versions) == 450
    assert not list((tmp_path / "m").glob(".staging-*"))


def test_prune_never_pulls_a_file_from_under_an_install_or_a_read(tmp_path: Path) -> None:
    # Before: prune deleted a blob between its download and its link (FileNotFoundError in
    # os.link), or a version a process was about to read.
    installer = _spawn(tmp_path, "fresh", "v", 120)
    pruner = _spawn(tmp_path, "prune", "-", 3)
    assert _finish(installer).strip() == "ok"
    pruned = _finish(pruner)
    assert int(pruned.split()[-1]) > 0, pruned  # it did run between the installs
