"""report.json, report.md and the PNG plots of a build. Every number comes from this build's results."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipeline import atomic

PLOTS = ("latency.png", "confusion_original.png", "confusion_quantized.png", "confusion_onnx.png")


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


_SHARES = (
    "agreement",
    "accuracy_quantized",
    "agreement_onnx",
    "accuracy_onnx",
    "challenge_accuracy_quantized",
    "challenge_accuracy_onnx",
)


def _variants(v: dict[str, Any]) -> list[str]:
    """The variants a report holds, in display order (older reports have no onnx)."""
    return [x for x in ("original", "quantized", "onnx") if x in v["variants"]]


def _fmt_measured(g: dict[str, Any]) -> str:
    v = g["measured"]
    if g["key"] in _SHARES:
        return _pct(v)
    return f"{v:.2f}{g['unit']}"


def _fmt_threshold(g: dict[str, Any]) -> str:
    t = g["threshold"]
    if g["key"] in _SHARES:
        return f"{g['op']} {_pct(t)}"
    return f"{g['op']} {t:g}{g['unit']}"


def gates_table(gates: list[dict[str, Any]]) -> str:
    """The gates as a Markdown table: threshold, measured, pass/fail."""
    rows = ["| gate | threshold | measured | result |", "|---|---|---|---|"]
    for g in gates:
        rows.append(
            f"| {g['name']} | {_fmt_threshold(g)} | {_fmt_measured(g)} | {'pass' if g['passed'] else '**FAIL**'} |"
        )
    return "\n".join(rows)


def accuracy_table(v: dict[str, Any]) -> list[str]:
    """Accuracy of each variant and the baseline on the eval set and, when built, the challenge set."""
    s = v["summary"]
    ch = v.get("challenge")
    classes = v["eval_set"]["classes"]
    lines = [
        f"## Accuracy on held-out sets ({len(classes)} classes, texts never seen in training)",
        "",
        f"The eval set ({v['eval_set']['rows']} texts) was written like the training data"
        + (
            f"; the challenge set ({ch['rows']} texts, `{Path(ch['path']).name}`) was written "
            "deliberately unlike it (other phrasings, terse noun phrases, typos, other words) and "
            "shows how the model holds up on questions phrased by someone else."
            if ch
            else "."
        ),
        "",
        "| model | eval set | challenge set |" if ch else "| model | eval set |",
        "|---|---|---|" if ch else "|---|---|",
    ]
    rows = [
        ("original (`export.pkl`)", "original"),
        ("quantized (`export_quantized.pkl`)", "quantized"),
        ("onnx (`model_int8.onnx`, no torch)", "onnx"),
    ]
    for title, name in rows:
        if name not in v["variants"]:
            continue
        cells = [_pct(v["variants"][name]["accuracy"])]
        if ch:
            cells.append(_pct(ch["variants"].get(name, {}).get("accuracy")))
        lines.append(f"| {title} | " + " | ".join(cells) + " |")
    if v.get("baseline"):
        cells = [_pct(v["baseline"]["accuracy"])]
        if ch:
            cells.append(_pct(s.get("challenge_baseline_accuracy")))
        lines.append(f"| baseline: {v['baseline']['name']} | " + " | ".join(cells) + " |")
    if v.get("majority_baseline"):
        m = v["majority_baseline"]
        cells = [_pct(m["accuracy"])] + (["n/a"] if ch else [])
        lines.append(
            f"| baseline: always `{m['label']}` (the majority class) | " + " | ".join(cells) + " |"
        )
    return lines


def versus_baseline_line(name: str, s: dict[str, Any], prefix: str) -> str:
    """The quantized model and the baseline text by text on one set, and what the gap means."""
    mine, theirs = s[f"{prefix}quantized_only_right"], s[f"{prefix}baseline_only_right"]
    p = s[f"{prefix}baseline_mcnemar_p"]
    verdict = (
        "a difference this set is too small to tell from chance"
        if p > 0.05
        else "unlikely to be chance"
    )
    return (
        f"Text by text on the {name}: {mine} answered right only by the quantized model, "
        f"{theirs} only by the baseline (exact McNemar test p = {p:.2f}: {verdict})."
    )


def gate_advice(gates: list[dict[str, Any]]) -> str:
    """What a user can do about each failed gate, one Markdown bullet each ("" when none failed)."""
    return "\n".join(
        f"- **{g['name']}**: {g['advice']}" for g in gates if not g["passed"] and g.get("advice")
    )


def _not_evaluated(meta: dict[str, Any], v: dict[str, Any]) -> list[str]:
    """Gates and variants this build could not evaluate, each with its reason."""
    out = []
    if not v.get("baseline"):
        out.append(
            "- points behind the TF-IDF baseline: not evaluated, no `data.train_csv` to train "
            "the baseline on (set it to the learner's training CSV to get this gate)"
        )
    skipped = meta.get("stages_skipped", {}).get("exporting onnx")
    if skipped:
        out.append(f"- onnx variant: not built, {skipped}")
    return out


def render_markdown(meta: dict[str, Any], results: dict[str, Any]) -> str:
    v = results["validate"]
    s = v["summary"]
    gates = v["gates"]
    failed = [g for g in gates if not g["passed"]]
    lat = v["latency"]
    classes = v["eval_set"]["classes"]
    out = [
        f"# {meta['model']} {meta['version']}: release report",
        "",
        f"Built {meta['created']} from git commit `{meta.get('git_commit') or 'unknown'}` with {meta['tool']}.",
        f"{meta['description']}" if meta.get("description") else "",
        "",
        "## Verdict",
        "",
        (
            f"**PASSED**: all {len(gates)} gates hold."
            if not failed
            else f"**FAILED**: {len(failed)} of {len(gates)} gates failed ({', '.join(g['name'] for g in failed)}). Nothing from this build may be published."
        ),
        "",
        gates_table(gates),
        "",
        *(["What you can do:", "", gate_advice(gates), ""] if failed else []),
        *(["Not evaluated:", "", *_not_evaluated(meta, v), ""] if _not_evaluated(meta, v) else []),
        *accuracy_table(v),
    ]
    out += [
        "",
        f"Top-1 agreement between the variants: {_pct(s['agreement'])}; probability difference mean "
        f"{s['mean_prob_diff']:.2e}, max {s['max_prob_diff']:.2e}.",
    ]
    if "agreement_onnx" in s:
        out += [
            "",
            f"Top-1 agreement of the onnx variant with the original: {_pct(s['agreement_onnx'])}; "
            f"probability difference mean {s['mean_prob_diff_onnx']:.2e}, max {s['max_prob_diff_onnx']:.2e}.",
        ]
    onnx = results.get("onnx", {})
    if "token_parity" in onnx:
        par = onnx["token_parity"]
        out += [
            "",
            "Token ids of the onnx client's tokenizer (no fastai, no spaCy) against fastai's: "
            + ", ".join(
                f"{p['identical']}/{p['texts']} {k} texts identical" for k, p in par.items()
            )
            + " (a build stops on any difference).",
        ]
    for name, base, model, prefix in (
        ("eval set", (v.get("baseline") or {}).get("accuracy"), s["accuracy_quantized"], ""),
        (
            "challenge set",
            s.get("challenge_baseline_accuracy"),
            s.get("challenge_accuracy_quantized"),
            "challenge_",
        ),
    ):
        if base is not None and model is not None and base > model:
            out += [
                "",
                f"Note: the linear baseline beats the quantized model by {100 * (base - model):.1f} "
                f"points on the {name}. More (and more varied) training data, or pretrained "
                "weights, is what closes that gap.",
            ]
        if f"{prefix}baseline_mcnemar_p" in s:
            out += ["", versus_baseline_line(name, s, prefix)]
    names = _variants(v)
    out += ["", "| class | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for c in classes:
        cells = " | ".join(_pct(v["variants"][x]["per_class_accuracy"][c]) for x in names)
        out.append(f"| {c} | {cells} |")
    out += [
        "",
        " ".join(f"![confusion matrix, {x}](confusion_{x}.png)" for x in names),
        "",
        "## Size",
        "",
        "| file | size |",
        "|---|---|",
        f"| `export.pkl` | {_mb(s['size_original_bytes'])} |",
        f"| `export_quantized.pkl` | {_mb(s['size_quantized_bytes'])} |",
    ]
    if "size_onnx_bytes" in s:
        out.append(f"| `model_int8.onnx` + `tokenizer.json` | {_mb(s['size_onnx_bytes'])} |")
    out += [
        "",
        f"Ratio: {s['size_ratio']:.2f}x"
        + (f" (onnx: {s['size_ratio_onnx']:.2f}x)." if "size_ratio_onnx" in s else "."),
        "",
        f"## Latency per query (`learn.predict` unless marked client; batch 1, {lat['threads']} thread(s), {lat['queries']} eval queries, "
        f"variants interleaved, {lat['warmup']} warm-up calls each)",
        "",
        "| variant | p50 | p95 | mean |",
        "|---|---|---|---|",
    ]
    rows = {
        "original": "original",
        "quantized": "quantized",
        "quantized_client": "quantized, client `predict()`",
        "onnx": "onnx, client `predict()`",
    }
    for name, title in rows.items():
        if name not in lat:
            continue
        x = lat[name]
        out.append(
            f"| {title} | {x['p50_ms']:.1f} ms | {x['p95_ms']:.1f} ms | {x['mean_ms']:.1f} ms |"
        )
    out += [
        "",
        f"Speedup at p50: {s['speedup_p50']:.2f}x"
        + (f" (onnx: {s['speedup_p50_onnx']:.2f}x)" if "speedup_p50_onnx" in s else "")
        + (
            f"; the onnx variant answers {s['onnx_vs_quantized_client_p50']:.2f}x as fast as the "
            "quantized variant's client `predict()`."
            if "onnx_vs_quantized_client_p50" in s
            else "."
        ),
        "",
        "![latency](latency.png)",
        "",
        "## Loading on a server (each variant in a fresh process, plain `fastai.learner.load_learner`)",
        "",
        "| variant | load | first predict | RSS before load (torch + fastai imported) | peak RSS |",
        "|---|---|---|---|---|",
    ]
    for name in names:
        x = v["load"][name]
        out.append(
            f"| {name} | {1000 * x['load_seconds']:.0f} ms | {1000 * x['first_predict_seconds']:.0f} ms | "
            f"{x['rss_before_load_mb']:.0f} MB | {x['peak_rss_mb']:.0f} MB |"
        )
    if "onnx" in v["load"]:
        out += [
            "",
            "The onnx row is `pipeline.client.onnx_model` alone (onnxruntime, numpy, the JSON "
            "tokenizer); its RSS before load has neither torch nor fastai "
            f"(imported torch: {v['load']['onnx']['imported_torch']}).",
        ]
    out += ["", "## Environment that wrote the pickles", ""]
    out += [f"- {k}: {val}" for k, val in meta["environment"].items()]
    if "train" in results:
        t = results["train"]
        out += ["", "## Training", ""]
        out += [f"- {k}: {val}" for k, val in t.items()]
    out += ["", "## Build stages (up to this report)", "", "| stage | seconds |", "|---|---|"]
    out += [f"| {k} | skipped: {why} |" for k, why in meta.get("stages_skipped", {}).items()]
    out += [f"| {k} | {val:.1f} |" for k, val in meta.get("stage_seconds", {}).items()]
    return "\n".join(x for x in out if x is not None) + "\n"


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
    for name in _variants(v):
        m = v["variants"][name]["confusion"]
        fig, ax = plt.subplots(figsize=(6.5, 5.5))
        ax.imshow(m, cmap="Blues")
        ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
        ax.set_yticks(range(len(classes)), classes)
        for i, row in enumerate(m):
            for j, n in enumerate(row):
                ax.text(j, i, str(n), ha="center", va="center", fontsize=8)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(f"Confusion matrix, {name} ({_pct(v['variants'][name]['accuracy'])})")
        fig.tight_layout()
        paths.append(directory / f"confusion_{name}.png")
        fig.savefig(paths[-1], dpi=100)
        plt.close(fig)
    return paths


def write_report(directory: Path, meta: dict[str, Any], results: dict[str, Any]) -> list[Path]:
    """Write report.json, report.md and the plots; return their paths."""
    plots = write_plots(directory, results)
    atomic.write_text(
        directory / "report.json",
        json.dumps({"meta": meta, **results}, indent=1, default=str) + "\n",
    )
    atomic.write_text(directory / "report.md", render_markdown(meta, results))
    return [directory / "report.json", directory / "report.md", *plots]
