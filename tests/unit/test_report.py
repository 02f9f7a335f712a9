"""report.md / report.json / plots for many classes and many rows, from synthetic results (no
model): readable at 40 and 100 classes, per-text detail out of the published report."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import numpy as np

from pipeline import evaluation as ev
from pipeline.report import DETAIL_FILE, split_per_text, write_report
from pipeline.stages.manifest import spread

VARIANTS = ("original", "quantized", "onnx")


def synthetic(n_classes: int, rows: int, seed: int = 0) -> tuple[dict[str, Any], dict[str, Any]]:
    """meta and results shaped like a build's, every number made up but consistent."""
    rng = np.random.default_rng(seed)
    classes = [f"intent_{i:03d}" for i in range(n_classes)]
    truth = [classes[i % n_classes] for i in range(rows)]
    texts = [f"text {i} about {t}" for i, t in enumerate(truth)]
    variants, probabilities = {}, {}
    for name in VARIANTS:
        pred = [t if rng.random() < 0.8 else classes[rng.integers(n_classes)] for t in truth]
        variants[name] = {
            "accuracy": ev.accuracy(pred, truth),
            "per_class_accuracy": ev.per_class_accuracy(pred, truth, classes),
            "confusion": ev.confusion(pred, truth, classes),
            "predictions": pred,
        }
        probabilities[name] = rng.dirichlet(np.ones(n_classes), size=rows).tolist()
    lat = {"p50_ms": 1.0, "p95_ms": 2.0, "mean_ms": 1.2, "samples_ms": [1.0, 2.0]}
    load = {
        "load_seconds": 0.5,
        "first_predict_seconds": 0.1,
        "rss_before_load_mb": 300,
        "peak_rss_mb": 400,
        "imported_torch": False,
    }
    s = {
        "agreement": 0.99,
        "mean_prob_diff": 1e-3,
        "max_prob_diff": 1e-2,
        "accuracy_original": variants["original"]["accuracy"],
        "accuracy_quantized": variants["quantized"]["accuracy"],
        "size_original_bytes": 10_000_000,
        "size_quantized_bytes": 2_000_000,
        "size_ratio": 5.0,
        "speedup_p50": 4.0,
    }
    results = {
        "validate": {
            "eval_set": {"path": "eval.csv", "rows": rows, "classes": classes},
            "eval_texts": texts,
            "eval_labels": truth,
            "summary": s,
            "variants": variants,
            "baseline": {"name": "tfidf", "accuracy": 0.9, "predictions": truth},
            "latency": {"threads": 1, "warmup": 0, "queries": 2, **{v: lat for v in VARIANTS}},
            "load": {v: load for v in VARIANTS},
            "gates": [],
            "top_confusions": ev.top_confusions(
                {n: x["confusion"] for n, x in variants.items()}, classes, 15
            ),
            "seconds": {"predicting the eval set": 12.5, "latency": 3.0},
            "probabilities": probabilities,
        }
    }
    meta = {
        "model": "m",
        "version": "1.0.0",
        "created": "2026-01-01T00:00:00Z",
        "tool": "t",
        "environment": {"torch": "x"},
    }
    return meta, results


def png_size(path: Path) -> tuple[int, int]:
    return struct.unpack(">II", path.read_bytes()[16:24])


def test_forty_classes_scale_the_confusion_image_and_list_the_weakest(tmp_path: Path) -> None:
    meta, results = synthetic(40, 400)
    paths = write_report(tmp_path, meta, results)
    width, height = png_size(tmp_path / "confusion_quantized.png")
    assert width > 800 and height > 700  # 6.5 x 5.5 inches at 100 dpi for a few classes
    md = (tmp_path / "report.md").read_text()
    assert "The 30 classes of 40 the quantized model answers worst" in md
    per_class = [x for x in md.splitlines() if x.startswith("| intent_") and x.count("|") == 5]
    assert len(per_class) == 30
    acc = results["validate"]["variants"]["quantized"]["per_class_accuracy"]
    listed = [x.split("|")[1].strip() for x in per_class]
    assert max(acc[c] for c in listed) <= min(acc[c] for c in acc if c not in listed)
    assert (
        "| true class | predicted | original | quantized | onnx | share of the true class |" in md
    )
    assert "Validating (400 eval texts, 40 classes), in seconds: predicting the eval set 12.5" in md
    assert tmp_path / DETAIL_FILE not in paths  # what the manifest lists is what is published


def test_a_hundred_classes_skip_the_image_with_its_reason(tmp_path: Path) -> None:
    (tmp_path / "confusion_onnx.png").write_bytes(b"stale")
    meta, results = synthetic(100, 300)
    paths = write_report(tmp_path, meta, results)
    assert not list(tmp_path.glob("confusion_*.png"))
    assert {p.name for p in paths} == {"report.json", "report.md", "latency.png"}
    md = (tmp_path / "report.md").read_text()
    assert "Confusion images: not drawn, 100 classes are too many to read in one image" in md


def test_per_text_detail_stays_out_of_the_published_report(tmp_path: Path) -> None:
    meta, results = synthetic(150, 1000)
    published, detail = split_per_text(results)
    assert results["validate"]["probabilities"]  # the build's own results are not changed
    write_report(tmp_path, meta, results)
    report = json.loads((tmp_path / "report.json").read_text())
    v = report["validate"]
    assert "probabilities" not in v and "eval_texts" not in v and "eval_labels" not in v
    assert all(set(x) == {"accuracy", "per_class_accuracy"} for x in v["variants"].values())
    assert "predictions" not in v["baseline"]
    assert v["per_text"] == {**v["per_text"], "file": DETAIL_FILE, "published": False}
    kept = json.loads((tmp_path / DETAIL_FILE).read_text())
    assert len(kept["probabilities"]["onnx"]) == 1000 and len(kept["eval_texts"]) == 1000
    assert (
        kept["variants"]["quantized"]["predictions"]
        == (results["validate"]["variants"]["quantized"]["predictions"])
    )
    size = (tmp_path / "report.json").stat().st_size
    assert size < 200_000, size  # 150 classes: the per-class accuracies and the top confusions
    assert (tmp_path / DETAIL_FILE).stat().st_size > 20 * size


def test_spread_takes_evenly_spaced_items_first() -> None:
    items = [f"c{i}" for i in range(10)]
    assert spread(items, 3)[:3] == ["c0", "c3", "c6"]
    assert sorted(spread(items, 3)) == sorted(items)
    assert spread(items, 12) == items


def test_the_verdict_says_when_the_model_did_not_train() -> None:
    from pipeline.report import render_markdown

    meta, results = synthetic(5, 20)
    assert "did not train" not in render_markdown(meta, results)
    results["validate"]["did_not_train"] = "the model did not train: eval loss 1.60 against 1.61"
    md = render_markdown(meta, results)
    verdict = md.split("## Verdict", 1)[1].split("## ", 1)[0]
    assert "**Warning: the model did not train: eval loss 1.60 against 1.61.**" in verdict
