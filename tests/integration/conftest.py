"""Fixtures shared by the integration tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pipeline import config as cfg
from pipeline import manifest as mf
from pipeline.build import build
from pipeline.dataset import read_labelled_csv
from tests.conftest import FIXTURES, ROOT
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
