"""The Hub model card: metadata the Hub parses (library_name, tags, labels, model-index)."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from pipeline.config import HubTarget
from pipeline.publishers import modelcard
from tests.conftest import make_release_dir


def front_matter(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n")[1])


def test_card_metadata_and_body(tmp_path: Path) -> None:
    m = make_release_dir(tmp_path)
    m = type(m)(
        **{
            **m.__dict__,
            "validation": {
                "metrics": {
                    "accuracy_original": 0.939,
                    "accuracy_quantized": 0.9361,
                    "agreement": 0.997,
                },
                "eval_rows": 343,
            },
        }
    )
    (tmp_path / "report.json").write_text(
        json.dumps({"validate": {"baseline": {"name": "tf-idf", "accuracy": 0.93}}})
    )
    card = modelcard.render(
        m,
        tmp_path,
        HubTarget("acme/m", tags=("intent",), license="mit"),
        "acme/m",
        "v1.0.0",
        signed=True,
    )
    meta = front_matter(card)
    assert meta["library_name"] == "fastai" and meta["license"] == "mit"
    assert meta["pipeline_tag"] == "text-classification"
    assert {"fastai", "text-classification", "intent"} <= set(meta["tags"])
    assert meta["labels"] == ["a", "b"]
    results = meta["model-index"][0]["results"]
    metrics = {x["name"]: x["value"] for r in results for x in r["metrics"]}
    assert metrics["Accuracy (quantized, export_quantized.pkl)"] == 0.9361
    assert metrics["Accuracy (original, export.pkl)"] == 0.939
    assert results[0]["task"]["type"] == "text-classification"
    assert "343 texts" in results[0]["dataset"]["name"]
    assert meta["widget"] == [{"text": "hello", "example_title": "a"}]  # the golden queries
    assert "## How to use" in card
    assert 'from_pretrained_fastai("acme/m", revision="v1.0.0")' in card
    assert 'sources=[parse_source("hf:acme/m")]' in card
    assert "model_signing verify key" in card and "| baseline: tf-idf | 93.0% |" in card
    assert "| quantized | 93.6% |" in card and "challenge" not in card
    # deterministic: the same release gives the same bytes (a re-run changes nothing on the Hub)
    assert card == modelcard.render(
        m,
        tmp_path,
        HubTarget("acme/m", tags=("intent",), license="mit"),
        "acme/m",
        "v1.0.0",
        signed=True,
    )


def test_card_shows_accuracy_per_set_with_a_challenge_set(tmp_path: Path) -> None:
    m = make_release_dir(tmp_path)
    metrics = {
        "accuracy_original": 0.94,
        "accuracy_quantized": 0.935,
        "accuracy_onnx": 0.93,
        "baseline_accuracy": 0.939,
        "challenge_rows": 245,
        "challenge_accuracy_original": 0.92,
        "challenge_accuracy_quantized": 0.918,
        "challenge_accuracy_onnx": 0.914,
        "challenge_baseline_accuracy": 0.9,
        "quantized_only_right": 5,
        "baseline_only_right": 6,
        "baseline_mcnemar_p": 1.0,
        "challenge_quantized_only_right": 9,
        "challenge_baseline_only_right": 1,
        "challenge_baseline_mcnemar_p": 0.0215,
    }
    m = type(m)(**{**m.__dict__, "validation": {"metrics": metrics, "eval_rows": 343}})
    (tmp_path / "report.json").write_text(
        json.dumps({"validate": {"baseline": {"name": "tf-idf", "accuracy": 0.939}}})
    )
    card = modelcard.render(m, tmp_path, HubTarget("acme/m"), "acme/m", "v1.0.0", signed=False)
    assert "| | eval set | challenge set |" in card
    assert "| quantized | 93.5% | 91.8% |" in card and "| onnx | 93.0% | 91.4% |" in card
    assert "| baseline: tf-idf | 93.9% | 90.0% |" in card
    # and whether each gap to the baseline can be chance, from the texts only one got right
    assert (
        "Text by text on the eval set: 5 answered right only by the quantized model, 6 only by "
        "the baseline (exact McNemar test p = 1.00: a difference this set is too small to tell "
        "from chance)." in card
    )
    assert "on the challenge set: 9 answered right only" in card
    assert "p = 0.02: unlikely to be chance" in card
    results = front_matter(card)["model-index"][0]["results"]
    challenge = [r for r in results if r["dataset"]["type"] == "m-challenge"]
    assert "245 texts" in challenge[0]["dataset"]["name"]
    values = {x["name"]: x["value"] for r in challenge for x in r["metrics"]}
    assert values["Challenge-set accuracy (quantized, export_quantized.pkl)"] == 0.918


def test_card_without_metrics_or_report(tmp_path: Path) -> None:
    m = make_release_dir(tmp_path)
    card = modelcard.render(m, tmp_path, HubTarget("acme/m"), "acme/m", "v1.0.0", signed=False)
    meta = front_matter(card)
    assert "model-index" not in meta and "license" not in meta
    assert "model.sig" not in card


def test_card_lists_only_the_files_in_the_repo_and_says_where_the_others_are(
    tmp_path: Path,
) -> None:
    m = make_release_dir(tmp_path)
    names = ["export_quantized.pkl", "report.md", "model.pkl", "pyproject.toml", "manifest.json"]
    card = modelcard.render(
        m, tmp_path, HubTarget("acme/m"), "acme/m", "v1.0.0", signed=False, hub_names=names
    )
    table = card.split("## Files")[1].split("##")[0]
    assert "| `model.pkl` |" in table and "stored once" in table
    assert "| `export.pkl` |" not in table
    assert "Not in this repo" in table and "`export.pkl`" in table
    assert "**3. Without torch" not in card  # no onnx file in this release
