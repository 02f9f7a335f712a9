"""A build with 80 classes (the shape of a 150-intent dataset) on a tiny model: the report stays
readable, the golden queries spread over the classes, and validation says where its time went."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline import config as cfg
from pipeline.build import build
from tests import zoo
from tests.helpers import small_build_toml

pytestmark = pytest.mark.slow

CONFIG = small_build_toml(
    "many",
    train="epochs = 5\nlr = 0.03\nbatch_size = 32\n",
    validate="golden_queries = 10\nmin_size_ratio = 0.0\nmin_speedup = 0.0\n"
    "max_accuracy_drop = 100.0\nmin_agreement = 0.0\nbeat_majority = false\n"
    "max_baseline_deficit = 100.0\n",
)


@pytest.fixture(scope="module")
def many(tmp_path_factory) -> tuple[Path, object]:
    """One build of 80 classes (480 training rows, 5 epochs of a 16/24 network: the only build
    with many classes; seconds of training on an idle machine)."""
    work = tmp_path_factory.mktemp("many")
    train, eval_ = zoo.many_classes(80)
    train.to_csv(work / "train.csv", index=False)
    eval_.to_csv(work / "eval.csv", index=False)
    (work / "release.toml").write_text(CONFIG)
    config = cfg.load(work / "release.toml")
    # an image an earlier build left must not be published with this one
    config.build_dir.mkdir(parents=True)
    (config.build_dir / "confusion_quantized.png").write_bytes(b"\x89PNG stale")
    return config.build_dir, build(config)


def test_the_report_of_80_classes_stays_readable(many) -> None:
    d, m = many
    md = (d / "report.md").read_text()
    rows = [line for line in md.splitlines() if line.startswith("| intent_")]
    per_class = [r for r in rows if r.count("|") == 4]  # | class | original | quantized |
    assert len(per_class) == 30 and "The 30 classes of 80 the quantized model answers worst" in md
    assert "| true class | predicted | original | quantized | share of the true class |" in md
    confusions = [r for r in rows if r.count("|") == 6]
    report = json.loads((d / "report.json").read_text())
    top = report["validate"]["top_confusions"]
    assert 0 < len(confusions) == len(top) <= 15
    assert [t["quantized"] for t in top] == sorted((t["quantized"] for t in top), reverse=True)
    # no image of 80 x 80 cells: the reason instead, and no stale image in the release
    assert "Confusion images: not drawn, 80 classes are too many to read in one image" in md
    assert not list(d.glob("confusion_*.png"))
    assert not any(f.name.startswith("confusion_") for f in m.files)
    # validation says where its time went
    seconds = report["validate"]["seconds"]
    assert {"predicting the eval set", "TF-IDF baseline", "latency"} <= set(seconds)
    assert "Validating (160 eval texts, 80 classes), in seconds: predicting the eval set " in md
    assert len(md) < 20_000, len(md)


def test_golden_queries_spread_over_the_classes_up_to_the_cap(many) -> None:
    d, m = many
    labels = [q.expected for q in m.golden_queries]
    assert 0 < len(labels) <= 10 and len(set(labels)) == len(labels)
    detail = json.loads((d / "predictions.json").read_text())
    answered = {
        t
        for t, *p in zip(
            detail["eval_labels"],
            *(x["predictions"] for x in detail["variants"].values()),
            strict=True,
        )
        if all(y == t for y in p)
    }
    assert len(answered) > 10  # more classes to choose from than the cap
    ranks = sorted(sorted(answered).index(x) for x in labels)
    assert len(ranks) == 10 and ranks[-1] - ranks[0] >= len(answered) // 2, ranks
