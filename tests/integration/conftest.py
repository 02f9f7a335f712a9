"""Fixtures shared by the integration tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pipeline import config as cfg
from pipeline import manifest as mf
from pipeline.build import build
from pipeline.client import Http, MirrorSource, RetryPolicy
from pipeline.dataset import read_labelled_csv
from tests.conftest import FIXTURES, ROOT
from tests.mirror_server import MirrorServer
from tests.zoo import long_texts

BUNDLED_EVAL = ROOT / "pipeline" / "data" / "eval.csv"


def write_eval_with_long_texts(path: Path) -> list[str]:
    """The bundled eval set plus one text per class longer than 2 x seq_len (built from that
    class's eval texts): the chunked path of fastai's SentenceEncoder, which the bundled
    queries never take. Returns the long texts."""
    import csv

    data = read_labelled_csv(BUNDLED_EVAL, "text", "label", min_classes=1)
    rows = long_texts(data.texts, data.labels)
    with path.open("w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        w.writerows(zip(data.texts, data.labels, strict=True))
        w.writerows(rows)
    return [t for t, _ in rows]


def long_eval_texts(work: Path) -> list[str]:
    """The long texts `write_eval_with_long_texts` added to `work`/eval.csv."""
    bundled = len(read_labelled_csv(BUNDLED_EVAL, "text", "label", min_classes=1))
    return list(read_labelled_csv(work / "eval.csv", "text", "label", min_classes=1).texts)[
        bundled:
    ]


def assert_close_answers(got: Any, want: Any, tolerance: float, what: str = "") -> None:
    """Probabilities (texts x classes) within `tolerance` of each other; a label may differ only
    where `want`'s top two are closer than twice the largest difference (a near tie that INT8
    arithmetic can flip)."""
    import numpy as np

    got, want = np.asarray(got), np.asarray(want)
    worst = float(np.abs(got - want).max())
    assert worst < tolerance, (what, worst)
    top2 = np.sort(want, axis=1)[:, -2:]
    for i in np.flatnonzero(got.argmax(1) != want.argmax(1)):
        assert top2[i, 1] - top2[i, 0] < 2 * worst, (what, i, worst)


def tiny_toml(work: Path) -> str:
    """tests/fixtures/tiny.toml reading `work`/eval.csv (see `write_eval_with_long_texts`), by
    its absolute path: a copy of the config elsewhere has the same inputs, so the same build."""
    eval_csv = json.dumps(str(work / "eval.csv"))  # a TOML basic string
    return (FIXTURES / "tiny.toml").read_text().replace('"bundled:eval.csv"', eval_csv)


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> tuple[Path, mf.Manifest]:
    """One trained tiny release shared by the tests (they copy before they change anything).

    Its eval set is the bundled one plus a long text per class (`write_eval_with_long_texts`).
    """
    work = tmp_path_factory.mktemp("tiny")
    write_eval_with_long_texts(work / "eval.csv")
    (work / "release.toml").write_text(tiny_toml(work))
    manifest = build(cfg.load(work / "release.toml"))
    return work, manifest


# -- a signed fake release in a local store, and HTTP mirrors serving it ---------------------------


def build_store(
    root: Path, tmp: Path, version: str = "1.0.0", quantized: int = 40_000, original: int = 400_000
) -> mf.Manifest:
    """Publish a fake release of `m` whose model files hold this many random bytes, signed by
    the tests' KEY, into the local store `root`."""
    import dataclasses
    import random

    from pipeline.publishers.local import LocalStore
    from tests.conftest import make_release_dir, sign_dir

    rng = random.Random(version)
    d = tmp / f"build-{version}"
    make_release_dir(d, "m", version)
    (d / mf.QUANTIZED_FILE).write_bytes(rng.randbytes(quantized))
    (d / mf.ORIGINAL_FILE).write_bytes(rng.randbytes(original))
    old = mf.Manifest.read(d)
    files = tuple(mf.file_entry(d / f.name, f.variant, f.kind) for f in old.files)
    m = dataclasses.replace(old, files=files)
    m.write(d)
    sign_dir(d, m)
    LocalStore(root).publish(d, m)
    return m


class Waits(list):
    """Records the waits the retry policy asks for, without sleeping."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def mirror(server: MirrorServer, waits: Waits | None = None, **policy: Any) -> MirrorSource:
    """A mirror source on `server` that retries quickly and sleeps into `waits`, not for real."""
    p = {"max_attempts": 4, "base_delay": 0.05, "max_total": 30, "connect_timeout": 2, "timeout": 2}
    http = Http(
        RetryPolicy.for_downloads(**{**p, **policy}),
        sleep=waits if waits is not None else Waits(),
        progress=False,
    )
    return MirrorSource(server.url, http=http)


@pytest.fixture
def store(tmp_path: Path) -> tuple[Path, mf.Manifest]:
    """A local store holding `build_store`'s release: (its root, the release's manifest)."""
    root = tmp_path / "store"
    return root, build_store(root, tmp_path)


@pytest.fixture
def hostile(store):
    """A mirror of `store` that a test makes misbehave (tests/mirror_server.py's faults)."""
    with MirrorServer(store[0]) as s:
        yield s


@pytest.fixture
def good(store):
    """A second mirror of `store`, left well-behaved: where the client goes next."""
    with MirrorServer(store[0]) as s:
        yield s
