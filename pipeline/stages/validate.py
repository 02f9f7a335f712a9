"""Stage: measure every built variant on the eval set and evaluate the gates from [validate].

Each measurement is its own function (predictions, accuracy, agreement, baselines here;
latency, fresh-process load, sizes in `stages.size_speed`), `measure_all` runs them in order and
times each, `summarize` turns them into the flat summary the gates read, and `stages.gates.gates`
(the one place the gate logic lives; the tests call it) holds the summary against [validate].
Everything measured lands in report.json; the gates are enforced by the `checking gates` stage
after the report is written, so a failed build still leaves its report to read.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from pipeline import evaluation as ev
from pipeline.manifest import ONNX_FILE, TOKENIZER_FILE
from pipeline.stages.base import BuildContext, working_on
from pipeline.stages.gates import did_not_train_message, gate_advice_for, gates
from pipeline.stages.size_speed import (
    file_sizes,
    latencies,
    load_measurements,
    network_bytes,
    network_latencies,
)

log = logging.getLogger("pipeline.build")

VARIANTS = ("original", "quantized", "onnx")
TOP_CONFUSIONS = 15  # (true, predicted) pairs the report lists
BASELINE_NAME = "TF-IDF word+char n-grams, logistic regression"


# --- measurements ------------------------------------------------------------------------------


def onnx_classifier(ctx: BuildContext) -> Any:
    """The onnx variant as the client loads it, or None when this build has none."""
    paths = (ctx.build_dir / ONNX_FILE, ctx.build_dir / TOKENIZER_FILE)
    if not all(p.is_file() for p in paths):
        return None
    from pipeline.client.onnx_model import OnnxClassifier

    return OnnxClassifier(*paths, threads=ctx.config.validate.threads)


def _onnx_predictions(clf, texts: list[str]) -> ev.Predictions:  # noqa: ANN001
    import numpy as np

    probs = np.stack([clf.predict(t).probs for t in texts]).astype(np.float32)
    return ev.Predictions([clf.labels[i] for i in probs.argmax(1)], probs)


def predict_variants(
    ctx: BuildContext, texts: list[str], onnx: Any = None, source: str = "the texts"
) -> dict[str, ev.Predictions]:
    """Predictions of every built variant on `texts`, keyed "original", "quantized"[, "onnx"];
    an error names the variant and `source` (where the texts come from)."""
    preds = {}
    for name, learn in (("original", ctx.original_learner()), ("quantized", ctx.quantized)):
        with working_on(f"predicting {source} ({len(texts)} texts) with the {name} variant"):
            preds[name] = ev.predict_all(learn, texts)
    if onnx is not None:
        with working_on(f"predicting {source} ({len(texts)} texts) with the onnx variant"):
            preds["onnx"] = _onnx_predictions(onnx, texts)
    return preds


def accuracy_by_variant(
    preds: dict[str, ev.Predictions], truth: list[str], classes: list[str]
) -> dict[str, dict[str, Any]]:
    """Accuracy, per-class accuracy, confusion matrix and predicted labels of each variant."""
    return {
        name: {
            "accuracy": ev.accuracy(p.labels, truth),
            "per_class_accuracy": ev.per_class_accuracy(p.labels, truth, classes),
            "confusion": ev.confusion(p.labels, truth, classes),
            "predictions": p.labels,
        }
        for name, p in preds.items()
    }


def agreements(preds: dict[str, ev.Predictions]) -> dict[str, dict[str, float]]:
    """Top-1 agreement and probability differences of each derived variant with the original."""
    return {
        name: ev.compare(preds["original"], p) for name, p in preds.items() if name != "original"
    }


def baseline_accuracy(
    ctx: BuildContext, texts: list[str], truth: list[str], quantized: list[str] | None = None
) -> dict[str, Any] | None:
    """The TF-IDF + logistic regression baseline trained on the train CSV, or None without one.

    With the quantized variant's predictions on the same texts, also the two text by text
    (`evaluation.paired`): a gap of a few texts on a few hundred can be chance.
    """
    if ctx.train_data is None:
        return None
    if ctx.baseline_model is None:  # fitted once, for the eval and the challenge set
        ctx.baseline_model = ev.fit_tfidf_baseline(
            list(ctx.train_data.texts), list(ctx.train_data.labels), ctx.config.train.seed
        )
    pred = [str(x) for x in ctx.baseline_model.predict(texts)]
    out: dict[str, Any] = {"name": BASELINE_NAME, "accuracy": ev.accuracy(pred, truth)}
    if quantized is not None:
        out["versus_quantized"] = ev.paired(quantized, pred, truth)
    return out | {"predictions": pred}


def challenge_accuracy(ctx: BuildContext, onnx: Any = None) -> dict[str, Any] | None:
    """Every variant and the baseline on the challenge set; None when none is configured."""
    data = ctx.challenge_data
    if data is None:
        return None
    texts, truth = list(data.texts), list(data.labels)
    classes = [str(x) for x in ctx.original_learner().dls.vocab[1]]
    log.info("accuracy on %d challenge texts ...", len(texts))
    preds = predict_variants(ctx, texts, onnx, str(data.path))
    variants = {
        name: {k: x[k] for k in ("accuracy", "per_class_accuracy", "predictions")}
        for name, x in accuracy_by_variant(preds, truth, classes).items()
    }
    return {
        "path": str(data.path),
        "rows": len(texts),
        "texts": texts,
        "labels": truth,
        "variants": variants,
        "baseline": baseline_accuracy(
            ctx, texts, truth, variants.get("quantized", {}).get("predictions")
        ),
    }


def majority_baseline(truth: list[str]) -> dict[str, Any]:
    """Always answering the eval set's most frequent class: the best any constant answer scores."""
    label, n = Counter(truth).most_common(1)[0]
    return {"label": label, "accuracy": n / len(truth)}


def _versus_original(
    name: str,
    suffix: str,
    variants: dict[str, dict[str, Any]],
    comparisons: dict[str, dict[str, float]],
    sizes: dict[str, int],
    latency: dict[str, Any],
    loads: dict[str, dict[str, Any]],
) -> dict[str, float]:
    """One variant's numbers against the original ("" suffix keeps the quantized keys)."""
    cmp = comparisons[name]
    return {
        f"accuracy_{name}": variants[name]["accuracy"],
        f"accuracy_drop_points{suffix}": 100
        * (variants["original"]["accuracy"] - variants[name]["accuracy"]),
        f"agreement{suffix}": cmp["agreement"],
        f"mean_prob_diff{suffix}": cmp["mean_prob_diff"],
        f"max_prob_diff{suffix}": cmp["max_prob_diff"],
        f"size_{name}_bytes": sizes[name],
        f"size_ratio{suffix}": sizes["original"] / sizes[name],
        f"p50_ms_{name}": latency[name]["p50_ms"],
        f"p95_ms_{name}": latency[name]["p95_ms"],
        f"speedup_p50{suffix}": latency["original"]["p50_ms"] / latency[name]["p50_ms"],
        f"load_seconds_{name}": loads[name]["load_seconds"],
        f"peak_rss_mb_{name}": loads[name]["peak_rss_mb"],
    }


def _add_network_numbers(
    summary: dict[str, Any],
    networks: dict[str, int] | None,
    network_latency: dict[str, Any] | None,
) -> None:
    """What quantization acts on, the gates' measure: the network's bytes and forward pass
    alone, added to `summary` (which holds each variant's `speedup_p50` already)."""
    for name, suffix in (("quantized", ""), ("onnx", "_onnx")):
        if networks and name in networks:
            summary[f"network_bytes_{name}"] = networks[name]
            summary[f"network_size_ratio{suffix}"] = networks["original"] / networks[name]
        if network_latency and name in network_latency:
            summary[f"network_p50_ms_{name}"] = network_latency[name]["p50_ms"]
            summary[f"network_speedup_p50{suffix}"] = (
                network_latency["original"]["p50_ms"] / network_latency[name]["p50_ms"]
            )
        if f"speedup_p50{suffix}" in summary and f"network_speedup_p50{suffix}" not in summary:
            # the network alone could not be timed for this learner: the gate reads predict
            summary[f"network_speedup_p50{suffix}"] = summary[f"speedup_p50{suffix}"]
            summary["speed_gate_reads"] = "predict"
    if networks:
        summary["network_bytes_original"] = networks["original"]
    if network_latency:
        summary["network_p50_ms_original"] = network_latency["original"]["p50_ms"]


def _client_numbers(latency: dict[str, Any]) -> dict[str, float]:
    """The quantized variant's fast client predict(), and the onnx variant against it."""
    if "quantized_client" not in latency:
        return {}
    out = {"p50_ms_quantized_client": latency["quantized_client"]["p50_ms"]}
    if "onnx" in latency:
        out["onnx_vs_quantized_client_p50"] = (
            latency["quantized_client"]["p50_ms"] / latency["onnx"]["p50_ms"]
        )
    return out


def _challenge_numbers(challenge: dict[str, Any]) -> dict[str, Any]:
    """Every variant's challenge-set accuracy, and the quantized one against the baseline."""
    out: dict[str, Any] = {"challenge_rows": challenge["rows"]}
    for name, x in challenge["variants"].items():
        out[f"challenge_accuracy_{name}"] = x["accuracy"]
    if challenge["baseline"]:
        base = challenge["baseline"]["accuracy"]
        out["challenge_baseline_accuracy"] = base
        out["challenge_baseline_deficit_points"] = 100 * (
            base - challenge["variants"]["quantized"]["accuracy"]
        )
        out.update(versus_baseline("challenge_", challenge["baseline"]))
    return out


def summarize(
    variants: dict[str, dict[str, Any]],
    comparisons: dict[str, dict[str, float]],
    sizes: dict[str, int],
    latency: dict[str, Any],
    loads: dict[str, dict[str, Any]],
    baseline: dict[str, Any] | None,
    majority: dict[str, Any] | None = None,
    challenge: dict[str, Any] | None = None,
    networks: dict[str, int] | None = None,
    network_latency: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The flat numbers the gates, the manifest and the report's headline read."""
    measured = (variants, comparisons, sizes, latency, loads)
    summary = {
        "accuracy_original": variants["original"]["accuracy"],
        "size_original_bytes": sizes["original"],
        "p50_ms_original": latency["original"]["p50_ms"],
        "p95_ms_original": latency["original"]["p95_ms"],
        "load_seconds_original": loads["original"]["load_seconds"],
        "peak_rss_mb_original": loads["original"]["peak_rss_mb"],
        "baseline_accuracy": baseline["accuracy"] if baseline else None,
        "baseline_deficit_points": (
            100 * (baseline["accuracy"] - variants["original"]["accuracy"]) if baseline else None
        ),
        **_versus_original("quantized", "", *measured),
        **versus_baseline("", baseline),
    }
    if majority is not None:
        summary["majority_accuracy"] = majority["accuracy"]
        summary["lead_over_majority_points"] = 100 * (
            variants["original"]["accuracy"] - majority["accuracy"]
        )
    if "onnx" in variants:
        summary.update(_versus_original("onnx", "_onnx", *measured))
    _add_network_numbers(summary, networks, network_latency)
    summary.update(_client_numbers(latency))
    if challenge is not None:
        summary.update(_challenge_numbers(challenge))
    return summary


def training_verdict(
    summary: dict[str, Any], probs: Any, truth: list[str], classes: list[str]
) -> dict[str, Any]:
    """Whether the original model learnt anything, by `evaluation.training_verdict` (the rule
    training applies to its held-out rows, here on the eval set against the TF-IDF baseline):
    its eval loss against a uniform guess's and its accuracy against chance and the baseline."""
    index = {c: i for i, c in enumerate(classes)}
    v = ev.training_verdict(
        summary["accuracy_original"],
        ev.mean_log_loss(probs, [index[t] for t in truth]),
        len(classes),
        summary.get("majority_accuracy"),
        summary.get("baseline_accuracy"),
    )
    return {
        "eval_loss_original": v["loss"],
        "chance_loss": v["chance_loss"],
        "chance_accuracy": v["chance_accuracy"],
        "did_not_train": v["did_not_train"],
    }


def versus_baseline(prefix: str, baseline: dict[str, Any] | None) -> dict[str, float]:
    """The quantized variant against the baseline text by text (nothing without a baseline)."""
    pair = (baseline or {}).get("versus_quantized")
    if not pair:
        return {}
    return {
        f"{prefix}quantized_only_right": pair["model_only_right"],
        f"{prefix}baseline_only_right": pair["baseline_only_right"],
        f"{prefix}baseline_mcnemar_p": pair["p_value"],
    }


def _log_summary(s: dict[str, Any]) -> None:
    log.info(
        "accuracy %.1f%% -> %.1f%%, agreement %.1f%%, size %.1fx, p50 %.1f -> %.1f ms (%.1fx)",
        100 * s["accuracy_original"],
        100 * s["accuracy_quantized"],
        100 * s["agreement"],
        s["size_ratio"],
        s["p50_ms_original"],
        s["p50_ms_quantized"],
        s["speedup_p50"],
    )
    if "accuracy_onnx" in s:
        log.info(
            "onnx: accuracy %.1f%%, agreement %.1f%%, size %.1fx, p50 %.1f ms (%.1fx)%s",
            100 * s["accuracy_onnx"],
            100 * s["agreement_onnx"],
            s["size_ratio_onnx"],
            s["p50_ms_onnx"],
            s["speedup_p50_onnx"],
            f", {s['onnx_vs_quantized_client_p50']:.2f}x the quantized client predict()"
            if "onnx_vs_quantized_client_p50" in s
            else "",
        )
    if "challenge_accuracy_quantized" in s:
        log.info(
            "challenge set (%d texts): original %.1f%%, quantized %.1f%%%s%s",
            s["challenge_rows"],
            100 * s["challenge_accuracy_original"],
            100 * s["challenge_accuracy_quantized"],
            f", onnx {100 * s['challenge_accuracy_onnx']:.1f}%"
            if "challenge_accuracy_onnx" in s
            else "",
            f", baseline {100 * s['challenge_baseline_accuracy']:.1f}%"
            if "challenge_baseline_accuracy" in s
            else "",
        )


@dataclass
class _Measured:
    """Everything `Validate` measures, before the summary and the gates."""

    preds: dict[str, ev.Predictions]
    variants: dict[str, dict[str, Any]]
    comparisons: dict[str, dict[str, float]]
    baseline: dict[str, Any] | None
    majority: dict[str, Any]
    challenge: dict[str, Any] | None
    latency: dict[str, Any]
    network_latency: dict[str, Any] | None
    loads: dict[str, dict[str, Any]]
    sizes: dict[str, int]
    networks: dict[str, int]
    seconds: dict[str, float]  # where validation's time goes (many rows or classes)

    def summary(self) -> dict[str, Any]:
        return summarize(
            self.variants,
            self.comparisons,
            self.sizes,
            self.latency,
            self.loads,
            self.baseline,
            self.majority,
            self.challenge,
            self.networks,
            self.network_latency,
        )


def measure_all(
    ctx: BuildContext, texts: list[str], truth: list[str], classes: list[str], onnx: Any
) -> _Measured:
    """Every measurement of the built variants on the eval (and challenge) set, each timed."""
    seconds: dict[str, float] = {}

    def timed(part: str, fn: Any, *args: Any) -> Any:
        start = time.perf_counter()
        try:
            return fn(*args)
        finally:
            seconds[part] = round(time.perf_counter() - start, 3)

    log.info("accuracy on %d eval texts ...", len(texts))
    preds = timed(
        "predicting the eval set", predict_variants, ctx, texts, onnx, str(ctx.eval_data.path)
    )
    variants = accuracy_by_variant(preds, truth, classes)
    comparisons = agreements(preds)
    baseline = timed(
        "TF-IDF baseline",
        baseline_accuracy,
        ctx,
        texts,
        truth,
        variants["quantized"]["predictions"],
    )
    majority = majority_baseline(truth)
    challenge = (
        timed("challenge set", challenge_accuracy, ctx, onnx)
        if ctx.challenge_data is not None
        else None
    )
    latency = timed("latency", latencies, ctx, texts, onnx)
    network_latency = timed("network forward latency", network_latencies, ctx, texts, onnx)
    loads = timed("fresh-process loads", load_measurements, ctx, texts[0], onnx is not None)
    return _Measured(
        preds=preds,
        variants=variants,
        comparisons=comparisons,
        baseline=baseline,
        majority=majority,
        challenge=challenge,
        latency=latency,
        network_latency=network_latency,
        loads=loads,
        sizes=file_sizes(ctx, onnx is not None),
        networks=network_bytes(ctx, onnx is not None),
        seconds=seconds,
    )


def _results(
    ctx: BuildContext,
    m: _Measured,
    classes: list[str],
    summary: dict[str, Any],
    gate_results: list[dict[str, Any]],
    untrained: str | None,
) -> dict[str, Any]:
    """report.json's `validate` section."""
    texts, truth = list(ctx.eval_data.texts), list(ctx.eval_data.labels)
    confusions = ev.top_confusions(
        {name: x["confusion"] for name, x in m.variants.items()}, classes, TOP_CONFUSIONS
    )
    return {
        "eval_set": {"path": str(ctx.eval_data.path), "rows": len(texts), "classes": classes},
        "eval_texts": texts,
        "eval_labels": truth,
        "summary": summary,
        "variants": m.variants,
        "agreement": m.comparisons["quantized"],
        **({"agreement_onnx": m.comparisons["onnx"]} if "onnx" in m.comparisons else {}),
        "baseline": m.baseline,
        "majority_baseline": m.majority,
        **({"challenge": m.challenge} if m.challenge else {}),
        "latency": m.latency,
        "network_latency": m.network_latency,
        "load": m.loads,
        "sizes": m.sizes,
        "network_bytes": m.networks,
        "gates": gate_results,
        "top_confusions": confusions,
        "seconds": m.seconds,
        "did_not_train": untrained,
        "probabilities": {name: p.probs.tolist() for name, p in m.preds.items()},
    }


class Validate:
    name = "validating"

    def skip_reason(self, ctx: BuildContext) -> str | None:
        return None

    def run(self, ctx: BuildContext) -> None:
        texts, truth = list(ctx.eval_data.texts), list(ctx.eval_data.labels)
        classes = [str(x) for x in ctx.original_learner().dls.vocab[1]]
        m = measure_all(ctx, texts, truth, classes, onnx_classifier(ctx))
        summary = m.summary()
        summary.update(training_verdict(summary, m.preds["original"].probs, truth, classes))
        gate_results = gates(ctx.config.validate, summary)
        for g in gate_results:  # advice from this build's settings
            g["advice"] = gate_advice_for(g, ctx.config, summary, ctx.results.get("training"))
        ctx.gates_passed = all(g["passed"] for g in gate_results)
        untrained = did_not_train_message(summary, ctx.config) if summary["did_not_train"] else None
        if untrained:
            log.warning("warning: %s", untrained)
        ctx.results["validate"] = _results(ctx, m, classes, summary, gate_results, untrained)
        _log_summary(summary)
        log.info(
            "validation: %s",
            ", ".join(f"{part} {t:.1f}s" for part, t in m.seconds.items()),
        )
