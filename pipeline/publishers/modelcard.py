"""The Hugging Face model card (README.md) of a release, from its manifest and report.json.

The YAML metadata is built with huggingface_hub's own `ModelCardData`/`EvalResult`, so it is what
the Hub parses: `library_name: fastai`, tags, the labels, and the eval metrics in `model-index`
form. The body says what each file is, how to load it, and how to check it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipeline.config import HubTarget
from pipeline.manifest import MANIFEST_NAME, SIGNATURE_NAME, Manifest

BASE_TAGS = ("fastai", "text-classification", "awd-lstm", "ulmfit", "quantized", "int8")


def _report(release_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((release_dir / "report.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def render(
    manifest: Manifest,
    release_dir: Path,
    target: HubTarget,
    repo_id: str,
    tag: str,
    signed: bool,
) -> str:
    """README.md for the Hub repo of this release (deterministic: same inputs, same bytes)."""
    from huggingface_hub import EvalResult, ModelCardData

    metrics = manifest.validation.get("metrics") or {}
    eval_rows = manifest.validation.get("eval_rows")
    dataset_name = f"{manifest.model} held-out eval set" + (
        f" ({eval_rows} texts)" if eval_rows else ""
    )
    results = []
    for key, name in (
        ("accuracy_quantized", "Accuracy (quantized, export_quantized.pkl)"),
        ("accuracy_original", "Accuracy (original, export.pkl)"),
        ("agreement", "Top-1 agreement quantized vs original"),
    ):
        if isinstance(metrics.get(key), int | float):
            results.append(
                EvalResult(
                    task_type="text-classification",
                    task_name="Text Classification",
                    dataset_type=f"{manifest.model}-eval",
                    dataset_name=dataset_name,
                    metric_type="accuracy" if key.startswith("accuracy") else "agreement",
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
    )
    yaml = data.to_yaml().strip()

    report = _report(release_dir)
    baseline = (report.get("validate") or {}).get("baseline") or {}
    env = manifest.environment
    lines = [
        "---",
        yaml,
        "---",
        "",
        f"# {manifest.model} {manifest.version}",
        "",
        manifest.description or "A fastai text classifier (AWD_LSTM).",
        "",
        f"Labels ({len(manifest.labels)}): " + ", ".join(f"`{x}`" for x in manifest.labels) + ".",
        "",
        "## Files",
        "",
        "| file | what | size | blake3 |",
        "|---|---|---|---|",
    ]
    for f in manifest.files:
        lines.append(
            f"| `{f.name}` | {f.variant or f.kind} | {f.size / 1e6:.2f} MB | `{f.blake3[:16]}…` |"
        )
    lines += [
        f"| `{MANIFEST_NAME}` | every file's size and blake3, the environment, metrics, golden queries | | |",
    ]
    if signed:
        lines.append(
            f"| `{SIGNATURE_NAME}` | OpenSSF Model Signing bundle: the signature of every file's sha256 | | |"
        )
    if metrics:
        lines += [
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
        if baseline.get("accuracy") is not None:
            lines += [
                "",
                f"Baseline on the same data ({baseline.get('name', 'baseline')}): {_pct(baseline['accuracy'])}.",
            ]
        lines += ["", "Every number comes from this release's `report.md` / `report.json`."]
    lines += [
        "",
        "## Use",
        "",
        "Verify before you unpickle: a pickle runs code when loaded.",
        "",
        "```python",
        "from huggingface_hub import hf_hub_download",
        "from fastai.learner import load_learner",
        "",
        f'path = hf_hub_download("{repo_id}", "export_quantized.pkl", revision="{tag}")',
        "# check its blake3 against manifest.json first (fastai-release's client does this for you)",
        "learn = load_learner(path)",
        'print(learn.predict("your text"))',
        "```",
        "",
        "Written by "
        + ", ".join(f"{k} {env[k]}" for k in ("python", "torch", "fastai") if k in env)
        + "; load with the same torch and fastai versions.",
        "",
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
