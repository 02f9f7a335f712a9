"""report.json and report.md of a build (its PNG plots: report_plots.py). Every number comes from
this build's results."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipeline import atomic

DETAIL_FILE = "predictions.json"  # per-text detail: kept in the build directory, never published
PER_CLASS_ROWS = 30  # more classes: the per-class table lists the weakest ones
CONFUSION_PLOT_MAX = 60  # more classes: no confusion image (the table of top confusions stays)


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


def per_class_table(v: dict[str, Any], names: list[str]) -> list[str]:
    """Each class's accuracy per variant; with more than `PER_CLASS_ROWS` classes, the weakest
    ones (quantized accuracy, then name) and where the rest are."""
    classes = v["eval_set"]["classes"]
    acc = {x: v["variants"][x]["per_class_accuracy"] for x in names}

    def weakness(c: str) -> tuple[float, str]:
        a = acc["quantized"][c]
        return (2.0 if a != a else a, c)  # nan (no eval text of the class) last

    shown = classes if len(classes) <= PER_CLASS_ROWS else sorted(classes, key=weakness)
    out = [""]
    if len(classes) > PER_CLASS_ROWS:
        shown = shown[:PER_CLASS_ROWS]
        out += [
            f"The {PER_CLASS_ROWS} classes of {len(classes)} the quantized model answers worst "
            "(every class: `per_class_accuracy` in report.json):",
            "",
        ]
    out += ["| class | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for c in shown:
        out.append(f"| {c} | " + " | ".join(_pct(acc[x][c]) for x in names) + " |")
    return out


def _network_size(s: dict[str, Any]) -> list[str]:
    """The size gate's measure: the network alone (what quantization acts on)."""
    if "network_size_ratio" not in s:
        return []
    onnx = (
        f"; onnx graph {_mb(s['network_bytes_onnx'])}, {s['network_size_ratio_onnx']:.2f}x"
        if "network_size_ratio_onnx" in s
        else ""
    )
    return [
        "",
        f"The size gate reads the network alone (the pickled `learn.model`, the onnx graph), "
        f"what quantization acts on: {_mb(s['network_bytes_original'])} -> "
        f"{_mb(s['network_bytes_quantized'])}, {s['network_size_ratio']:.2f}x{onnx}. The rest of "
        "a pickle (vocabulary, data pipeline) is the same in every variant and, for a small "
        "network, most of the file.",
    ]


def _network_speed(s: dict[str, Any]) -> list[str]:
    """The speed gate's measure: one forward pass of the network on pre-tokenized text."""
    if s.get("speed_gate_reads") == "predict":
        return [
            "The speed gate reads the p50 above: the network alone could not be timed for this "
            "learner.",
            "",
        ]
    if "network_p50_ms_original" not in s:
        return []
    onnx = (
        f"; onnx {s['network_p50_ms_onnx']:.2f} ms, {s['network_speedup_p50_onnx']:.2f}x"
        if "network_p50_ms_onnx" in s
        else ""
    )
    return [
        "The speed gate reads the network's forward pass alone (batch 1, texts tokenized "
        f"beforehand), what quantization makes faster: p50 {s['network_p50_ms_original']:.2f} ms "
        f"-> {s['network_p50_ms_quantized']:.2f} ms, {s['network_speedup_p50']:.2f}x{onnx}. "
        "Tokenizing and batching in `learn.predict` cost the same in every variant.",
        "",
    ]


def confusion_plot_skipped(n_classes: int) -> str | None:
    """Why a build with `n_classes` classes has no confusion image, or None."""
    if n_classes <= CONFUSION_PLOT_MAX:
        return None
    return (
        f"{n_classes} classes are too many to read in one image (it is drawn up to "
        f"{CONFUSION_PLOT_MAX}); the table of the most frequent confusions above is its summary"
    )


def confusions_section(v: dict[str, Any], names: list[str]) -> list[str]:
    """The most frequent mistakes as a table, then the confusion images or why there are none."""
    out = []
    top = v.get("top_confusions")
    if top:
        cols = [x for x in names if x in top[0]]
        out += [
            "",
            f"Most frequent confusions of the quantized model (up to {len(top)}; count of eval "
            "texts per variant):",
            "",
            "| true class | predicted | " + " | ".join(cols) + " | share of the true class |",
            "|---|---|" + "---|" * len(cols) + "---|",
        ]
        for r in top:
            counts = " | ".join(str(r[x]) for x in cols)
            out.append(
                f"| {r['true']} | {r['predicted']} | {counts} | {_pct(r['share_of_true'])} |"
            )
    elif top is not None:
        out += ["", "No confusions: the quantized model answers every eval text right."]
    skipped = confusion_plot_skipped(len(v["eval_set"]["classes"]))
    out += [
        "",
        f"Confusion images: not drawn, {skipped}."
        if skipped
        else " ".join(f"![confusion matrix, {x}](confusion_{x}.png)" for x in names),
    ]
    if "per_text" in v or "eval_texts" in v:
        out += [
            "",
            f"Each eval text's predictions: `{DETAIL_FILE}` in the build directory (not published).",
        ]
    return out


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
    """report.md: the verdict and gates, accuracy, agreement, per class, size, latency, loading,
    environment and stages, in that order."""
    v = results["validate"]
    names = _variants(v)
    out = [
        *_verdict_section(meta, v),
        *_agreement_notes(results),
        *per_class_table(v, names),
        *confusions_section(v, names),
        *_size_section(v["summary"]),
        *_latency_section(v),
        *_loading_section(v, names),
        *_environment_and_stages(meta, results),
    ]
    return "\n".join(x for x in out if x is not None) + "\n"


def _verdict_section(meta: dict[str, Any], v: dict[str, Any]) -> list[str]:
    """The title, the verdict, the gates (with advice for the failed ones) and the accuracy."""
    gates = v["gates"]
    failed = [g for g in gates if not g["passed"]]
    return [
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
        *([f"**Warning: {v['did_not_train']}.**", ""] if v.get("did_not_train") else []),
        gates_table(gates),
        "",
        *(["What you can do:", "", gate_advice(gates), ""] if failed else []),
        *(["Not evaluated:", "", *_not_evaluated(meta, v), ""] if _not_evaluated(meta, v) else []),
        *accuracy_table(v),
    ]


def _agreement_notes(results: dict[str, Any]) -> list[str]:
    """How often the variants agree, the onnx tokenizer's parity, and the baseline's notes."""
    v = results["validate"]
    s = v["summary"]
    out = [
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
    return out


def _size_section(s: dict[str, Any]) -> list[str]:
    """The files' sizes and the size ratio."""
    out = [
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
    return out + [
        "",
        f"Ratio: {s['size_ratio']:.2f}x"
        + (f" (onnx: {s['size_ratio_onnx']:.2f}x)." if "size_ratio_onnx" in s else "."),
        *_network_size(s),
    ]


def _latency_section(v: dict[str, Any]) -> list[str]:
    """Latency per query of each timed variant, and the speedup."""
    s, lat = v["summary"], v["latency"]
    out = [
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
    return out + [
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
        *_network_speed(s),
        "![latency](latency.png)",
    ]


def _loading_section(v: dict[str, Any], names: list[str]) -> list[str]:
    """Each variant's load time and memory in a fresh process."""
    out = [
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
    return out


def _environment_and_stages(meta: dict[str, Any], results: dict[str, Any]) -> list[str]:
    """The environment that wrote the pickles, the training, and the build stages' seconds."""
    v = results["validate"]
    out = ["", "## Environment that wrote the pickles", ""]
    out += [f"- {k}: {val}" for k, val in meta["environment"].items()]
    if "train" in results:
        t = results["train"]
        out += ["", "## Training", ""]
        out += [f"- {k}: {val}" for k, val in t.items()]
    out += ["", "## Build stages (up to this report)", "", "| stage | seconds |", "|---|---|"]
    out += [f"| {k} | skipped: {why} |" for k, why in meta.get("stages_skipped", {}).items()]
    out += [f"| {k} | {val:.1f} |" for k, val in meta.get("stage_seconds", {}).items()]
    if v.get("seconds"):
        out += [
            "",
            f"Validating ({v['eval_set']['rows']} eval texts, {len(v['eval_set']['classes'])} "
            "classes), in seconds: "
            + ", ".join(f"{part} {t:.1f}" for part, t in v["seconds"].items())
            + ".",
        ]
    return out


def split_per_text(results: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the results report.json publishes, the per-text detail `DETAIL_FILE` keeps).

    Every eval and challenge text with its label, each variant's and the baseline's prediction,
    the probabilities and the confusion matrices grow with the rows and the classes (the
    probabilities alone are rows x classes x variants numbers) and would be published with the
    model; the build directory keeps them beside the report, out of the manifest, so they are
    never published. `results` is not changed.
    """
    if "validate" not in results:
        return results, {}
    v = dict(results["validate"])
    detail: dict[str, Any] = {}
    for key in ("eval_texts", "eval_labels", "probabilities"):
        if key in v:
            detail[key] = v.pop(key)
    if "probabilities" in detail:  # 6 decimals: a third of the bytes, finer than any use of them
        import numpy as np

        detail["probabilities"] = {
            name: np.round(np.asarray(p, dtype=np.float64), 6).tolist()
            for name, p in detail["probabilities"].items()
        }
    variants, detail["variants"] = {}, {}
    for name, x in v.get("variants", {}).items():
        variants[name] = {k: y for k, y in x.items() if k not in ("predictions", "confusion")}
        detail["variants"][name] = {k: x[k] for k in ("predictions", "confusion") if k in x}
    v["variants"] = variants
    if v.get("baseline"):
        v["baseline"] = {k: y for k, y in v["baseline"].items() if k != "predictions"}
        detail["baseline_predictions"] = results["validate"]["baseline"].get("predictions")
    if v.get("challenge"):
        ch = dict(v["challenge"])
        detail["challenge"] = {
            "texts": ch.pop("texts", None),
            "labels": ch.pop("labels", None),
            "predictions": {n: x.get("predictions") for n, x in ch["variants"].items()},
            "baseline_predictions": (ch.get("baseline") or {}).get("predictions"),
        }
        ch["variants"] = {
            n: {k: y for k, y in x.items() if k != "predictions"} for n, x in ch["variants"].items()
        }
        if ch.get("baseline"):
            ch["baseline"] = {k: y for k, y in ch["baseline"].items() if k != "predictions"}
        v["challenge"] = ch
    v["per_text"] = {
        "file": DETAIL_FILE,
        "published": False,
        "holds": "each eval and challenge text, its label, every variant's and the baseline's "
        "prediction, the probabilities and the confusion matrices",
    }
    return {**results, "validate": v}, detail


def write_report(directory: Path, meta: dict[str, Any], results: dict[str, Any]) -> list[Path]:
    """Write report.json, report.md and the plots; return their paths (the published files).

    The per-text detail goes to `DETAIL_FILE` beside them, which is not published
    (`split_per_text`).
    """
    from pipeline.report_plots import write_plots

    plots = write_plots(directory, results)
    published, detail = split_per_text(results)
    atomic.write_text(
        directory / "report.json",
        json.dumps({"meta": meta, **published}, indent=1, default=str) + "\n",
    )
    if detail:
        atomic.write_text(
            directory / DETAIL_FILE,
            json.dumps({"meta": meta, **detail}, default=str, separators=(",", ":")) + "\n",
        )
    atomic.write_text(directory / "report.md", render_markdown(meta, results))
    return [directory / "report.json", directory / "report.md", *plots]
