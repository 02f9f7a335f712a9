"""The Hugging Face model card (README.md) of a release, from its manifest and report.json.

The YAML metadata is built with huggingface_hub's own `ModelCardData`/`EvalResult`, so it is what
the Hub parses: `library_name: fastai`, tags, the labels, and the eval metrics in `model-index`
form, and the manifest's golden queries as the widget's examples. The body says what each file
is and, under "How to use", the three ways to load it: the Hub's own `from_pretrained_fastai`,
fastai-release's verified `load_model` / `release fetch`, and the onnx variant without torch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipeline.config import HubTarget
from pipeline.manifest import (
    MANIFEST_NAME,
    ONNX_FILE,
    ORIGINAL_FILE,
    QUANTIZED_FILE,
    SIGNATURE_NAME,
    TOKENIZER_FILE,
    Manifest,
)
from pipeline.report import versus_baseline_line

BASE_TAGS = ("fastai", "text-classification", "awd-lstm", "ulmfit", "quantized", "int8")


def _report(release_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((release_dir / "report.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _accuracy_by_set(metrics: dict[str, Any], baseline: dict[str, Any]) -> list[str]:
    """Accuracy per held-out set (eval, and challenge when the build had one) and variant."""
    has_challenge = isinstance(metrics.get("challenge_accuracy_quantized"), int | float)
    sets = [("eval set", "accuracy_{}", "baseline_accuracy")]
    if has_challenge:
        sets.append(("challenge set", "challenge_accuracy_{}", "challenge_baseline_accuracy"))
    lines = [
        "",
        "Accuracy per held-out set"
        + (
            " (the challenge set's queries are written unlike the training data: other "
            "phrasings, noun phrases, typos):"
            if has_challenge
            else ":"
        ),
        "",
        "| | " + " | ".join(name for name, _, _ in sets) + " |",
        "|---" * (len(sets) + 1) + "|",
    ]
    for variant in ("original", "quantized", "onnx"):
        cells = [metrics.get(key.format(variant)) for _, key, _ in sets]
        if any(isinstance(c, int | float) for c in cells):
            lines.append(f"| {variant} | " + " | ".join(_pct(c) for c in cells) + " |")
    cells = [metrics.get(key) for _, _, key in sets]
    if cells[0] is None:  # older manifests: the eval baseline only in report.json
        cells[0] = baseline.get("accuracy")
    if baseline.get("accuracy") is not None or any(isinstance(c, int | float) for c in cells):
        name = baseline.get("name", "baseline")
        lines.append(f"| baseline: {name} | " + " | ".join(_pct(c) for c in cells) + " |")
    for name, prefix in (("eval set", ""), ("challenge set", "challenge_")):
        if f"{prefix}baseline_mcnemar_p" in metrics:
            lines += ["", versus_baseline_line(name, metrics, prefix)]
    return lines


def render(
    manifest: Manifest,
    release_dir: Path,
    target: HubTarget,
    repo_id: str,
    tag: str,
    signed: bool,
    hub_names: list[str] | None = None,
    manifest_blake3: str | None = None,
) -> str:
    """README.md for the Hub repo of this release (deterministic: same inputs, same bytes).

    `hub_names` are the files the repo holds (default: every release file); the table lists
    those, and says where the others are.
    """
    metrics = manifest.validation.get("metrics") or {}
    report = _report(release_dir)
    baseline = (report.get("validate") or {}).get("baseline") or {}
    names = set(hub_names) if hub_names is not None else {f.name for f in manifest.files}
    lines = [
        "---",
        _metadata(manifest, target, metrics),
        "---",
        "",
        f"# {manifest.model} {manifest.version}",
        "",
        manifest.description or "A fastai text classifier (AWD_LSTM).",
        "",
        f"Labels ({len(manifest.labels)}): " + ", ".join(f"`{x}`" for x in manifest.labels) + ".",
        "",
        *_files_table(manifest, names, signed),
        *_evaluation(metrics, baseline),
        *how_to_use(manifest, repo_id, tag, names, signed, manifest_blake3),
    ]
    if signed:
        lines += [
            f"`{SIGNATURE_NAME}` is an OpenSSF Model Signing bundle over every file, `{MANIFEST_NAME}`",
            "included. Check a download with `release verify DIR --public-key KEY` (or",
            "`--certificate-chain`, `--identity`), or with model-signing itself:",
            f"`model_signing verify key DIR --signature DIR/{SIGNATURE_NAME} --public_key KEY`.",
            "",
        ]
    return "\n".join(lines)


def _metadata(manifest: Manifest, target: HubTarget, metrics: dict[str, Any]) -> str:
    """The card's YAML metadata, made by huggingface_hub's own ModelCardData (what the Hub
    parses): library, tags, license, labels, eval results, the golden queries as examples."""
    from huggingface_hub import EvalResult, ModelCardData

    eval_rows = manifest.validation.get("eval_rows")
    dataset_name = f"{manifest.model} held-out eval set" + (
        f" ({eval_rows} texts)" if eval_rows else ""
    )
    challenge_name = f"{manifest.model} challenge set" + (
        f" ({metrics['challenge_rows']} texts phrased unlike the training data)"
        if metrics.get("challenge_rows")
        else ""
    )
    results = []
    for key, name, dataset in (
        ("accuracy_quantized", "Accuracy (quantized, export_quantized.pkl)", "eval"),
        ("accuracy_original", "Accuracy (original, export.pkl)", "eval"),
        ("agreement", "Top-1 agreement quantized vs original", "eval"),
        (
            "challenge_accuracy_quantized",
            "Challenge-set accuracy (quantized, export_quantized.pkl)",
            "challenge",
        ),
        (
            "challenge_accuracy_original",
            "Challenge-set accuracy (original, export.pkl)",
            "challenge",
        ),
    ):
        if isinstance(metrics.get(key), int | float):
            results.append(
                EvalResult(
                    task_type="text-classification",
                    task_name="Text Classification",
                    dataset_type=f"{manifest.model}-{dataset}",
                    dataset_name=dataset_name if dataset == "eval" else challenge_name,
                    metric_type="agreement" if key == "agreement" else "accuracy",
                    metric_name=name,
                    metric_value=round(float(metrics[key]), 4),
                )
            )
    tags = list(dict.fromkeys([*BASE_TAGS, *target.tags]))
    data = ModelCardData(
        library_name="fastai",
        pipeline_tag="text-classification",
        license=target.license or None,
        tags=tags,
        model_name=manifest.model,
        eval_results=results or None,
        labels=list(manifest.labels),
        widget=[{"text": q.text, "example_title": q.expected} for q in manifest.golden_queries]
        or None,
    )
    return data.to_yaml().strip()


def _files_table(manifest: Manifest, names: set[str], signed: bool) -> list[str]:
    """ "## Files": what each file of the repo is, its size and blake3; where the others are."""
    lines = [
        "## Files",
        "",
        "| file | what | size | blake3 |",
        "|---|---|---|---|",
    ]
    what = {
        QUANTIZED_FILE: "the INT8 learner (`load_learner`)",
        ORIGINAL_FILE: "the learner as trained",
        ONNX_FILE: "the INT8 onnx graph (onnxruntime, no torch)",
        TOKENIZER_FILE: "the onnx graph's tokenizer, vocabulary and labels (plain JSON)",
    }
    quantized = next((f for f in manifest.files if f.name == QUANTIZED_FILE), None)
    for f in manifest.files:
        if f.name in names:
            lines.append(
                f"| `{f.name}` | {what.get(f.name, f.variant or f.kind)} | {f.size / 1e6:.2f} MB | `{f.blake3[:16]}…` |"
            )
    if quantized is not None and "model.pkl" in names:
        lines.append(
            f"| `model.pkl` | `{QUANTIZED_FILE}` under the name `from_pretrained_fastai` loads "
            f"(the same LFS object, stored once) | {quantized.size / 1e6:.2f} MB | `{quantized.blake3[:16]}…` |"
        )
    if "pyproject.toml" in names:
        lines.append(
            "| `pyproject.toml` | the python, fastai and fastcore versions `from_pretrained_fastai` checks | | |"
        )
    lines += [
        f"| `{MANIFEST_NAME}` | every file's size and blake3, the environment, metrics, golden queries | | |",
    ]
    if signed:
        lines.append(
            f"| `{SIGNATURE_NAME}` | OpenSSF Model Signing bundle: the signature of every file's sha256 | | |"
        )
    elsewhere = [f.name for f in manifest.files if f.name not in names]
    if elsewhere:
        lines += [
            "",
            f"Not in this repo (listed in `{MANIFEST_NAME}`, published to the release's other "
            f"targets): {', '.join(f'`{n}`' for n in elsewhere)}; `from_pretrained_fastai` "
            "downloads every file of a revision, so only what a user loads is here.",
        ]
    return lines


def _evaluation(metrics: dict[str, Any], baseline: dict[str, Any]) -> list[str]:
    """ "## Evaluation": the variants side by side, then accuracy per held-out set (none
    without metrics)."""
    if not metrics:
        return []
    lines = [
        "",
        "## Evaluation",
        "",
        "| | original `export.pkl` | quantized `export_quantized.pkl` |",
        "|---|---|---|",
        f"| accuracy | {_pct(metrics.get('accuracy_original'))} | {_pct(metrics.get('accuracy_quantized'))} |",
    ]
    if isinstance(metrics.get("size_original_bytes"), int | float):
        lines.append(
            f"| size | {metrics['size_original_bytes'] / 1e6:.1f} MB | {metrics['size_quantized_bytes'] / 1e6:.1f} MB |"
        )
    if isinstance(metrics.get("p50_ms_original"), int | float):
        lines.append(
            f"| `learn.predict` p50 | {metrics['p50_ms_original']:.1f} ms | {metrics['p50_ms_quantized']:.1f} ms |"
        )
    if isinstance(metrics.get("agreement"), int | float):
        lines += ["", f"Top-1 agreement between the variants: {_pct(metrics['agreement'])}."]
    lines += _accuracy_by_set(metrics, baseline)
    lines += ["", "Every number comes from this release's `report.md` / `report.json`."]
    return lines


def how_to_use(
    manifest: Manifest,
    repo_id: str,
    tag: str,
    names: set[str],
    signed: bool,
    manifest_blake3: str | None = None,
) -> list[str]:
    """The "How to use" section: three ways to load this release, each a runnable snippet (the
    tests run every ```python block of it against a Hub emulator)."""
    env = manifest.environment
    query = manifest.golden_queries[0].text if manifest.golden_queries else "your text"
    written = ", ".join(f"{k} {env[k]}" for k in ("python", "torch", "fastai") if k in env)
    lines = [
        "",
        "## How to use",
        "",
        "A pickle runs code when it is loaded: load only files you trust. Written by "
        f"{written}; the pickles load with the same torch and fastai major.minor versions.",
        "",
        "**1. The Hub's own fastai loader** (`pip install huggingface_hub fastai toml`). It",
        "downloads every file of the revision and loads `model.pkl` (the quantized learner); it",
        "checks the fastai and fastcore versions in `pyproject.toml`, not the bytes.",
        "",
        "```python",
        "from huggingface_hub import from_pretrained_fastai",
        "",
        f'learn = from_pretrained_fastai("{repo_id}", revision="{tag}")',
        f"print(learn.predict({query!r}))",
        "```",
        "",
        "**2. Verified, with fastai-release** (`pip install 'fastai-release[hf]'` plus torch and",
        "fastai). It downloads only the variant it loads, checks its size and blake3 against",
        f"`{MANIFEST_NAME}` before unpickling, and the manifest itself against the pin below (the",
        f"blake3 of this release's `{MANIFEST_NAME}`)"
        + (f" or, with `public_key=`, its `{SIGNATURE_NAME}`" if signed else "")
        + "; it caches the files and asks the manifest's golden queries once at load.",
        "",
        "```python",
        "from pipeline.client import load_model, parse_source",
        "",
        f'loaded = load_model("{manifest.model}", "{manifest.version}", sources=[parse_source("hf:{repo_id}")],',
        f'                    pin="{manifest_blake3}")'
        if manifest_blake3
        else "                    )",
        f"label, probs = loaded.predict({query!r})",
        "print(label, loaded.variant)",
        "```",
        "",
        "or on the command line: `release fetch "
        f"{manifest.model} --version {manifest.version} --source hf:{repo_id}"
        + (f" --pin {manifest_blake3}" if manifest_blake3 else "")
        + " --load`.",
    ]
    if ONNX_FILE in names:
        lines += [
            "",
            f"**3. Without torch or fastai: the onnx variant** (`{ONNX_FILE}` + `{TOKENIZER_FILE}`;",
            "`pip install 'fastai-release[onnx,hf]'`, about 200 MB). The graph is data, not a",
            "pickle; the tokenizer reproduces fastai's exactly.",
            "",
            "```python",
            "from pipeline.client import load_model, parse_source",
            "",
            f'loaded = load_model("{manifest.model}", "{manifest.version}", sources=[parse_source("hf:{repo_id}")],',
            '                    variants=("onnx",))',
            f"label, probs = loaded.predict({query!r})",
            "print(label, loaded.variant)",
            "```",
        ]
    if manifest.golden_queries:
        lines += [
            "",
            "The widget's examples are the release's golden queries: each must give its label",
            "(the client checks that at load).",
        ]
    lines.append("")
    return lines
