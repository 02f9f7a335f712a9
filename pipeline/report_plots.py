"""The PNG plots of a build's report: latency per variant, and a confusion matrix per variant
(none above `report.CONFUSION_PLOT_MAX` classes)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.report import _pct, _variants, confusion_plot_skipped

CONFUSION_ANNOTATE_MAX = 25  # classes up to which a confusion image writes each cell's count
PLOTS = ("latency.png", "confusion_original.png", "confusion_quantized.png", "confusion_onnx.png")


def write_plots(directory: Path, results: dict[str, Any]) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    v = results["validate"]
    classes = v["eval_set"]["classes"]
    paths = []
    fig, ax = plt.subplots(figsize=(7, 4))
    timed = [x for x in ("original", "quantized", "quantized_client", "onnx") if x in v["latency"]]
    data = [v["latency"][x]["samples_ms"] for x in timed]
    ax.boxplot(data, vert=False, tick_labels=timed, showfliers=True)
    ax.set_xlabel("ms per predict (batch 1; torch rows: learn.predict unless _client)")
    ax.set_title(f"Latency, {v['latency']['threads']} thread(s), interleaved")
    ax.set_xscale("log")
    fig.tight_layout()
    paths.append(directory / "latency.png")
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)
    n = len(classes)
    for name in _variants(v):
        path = directory / f"confusion_{name}.png"
        if confusion_plot_skipped(n):
            path.unlink(missing_ok=True)  # an earlier build's image would be published
            continue
        m = v["variants"][name]["confusion"]
        side = max(6.5, 0.22 * n)  # inches: a tick label per class stays legible
        fontsize = 8 if n <= CONFUSION_ANNOTATE_MAX else max(4, 8 - n // 15)
        fig, ax = plt.subplots(figsize=(side, side * 0.85))
        ax.imshow(m, cmap="Blues")
        ax.set_xticks(
            range(n), classes, rotation=90 if n > 12 else 45, ha="right", fontsize=fontsize
        )
        ax.set_yticks(range(n), classes, fontsize=fontsize)
        if n <= CONFUSION_ANNOTATE_MAX:
            for i, row in enumerate(m):
                for j, count in enumerate(row):
                    ax.text(j, i, str(count), ha="center", va="center", fontsize=8)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(f"Confusion matrix, {name} ({_pct(v['variants'][name]['accuracy'])})")
        fig.tight_layout()
        paths.append(path)
        fig.savefig(paths[-1], dpi=100)
        plt.close(fig)
    return paths
