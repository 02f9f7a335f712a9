"""Stage: measure both variants on the eval set and evaluate the gates from [validate].

Everything measured here lands in report.json; the gates are enforced by the `checking gates`
stage after the report is written, so a failed build still leaves its report to read.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from pipeline import evaluation as ev
from pipeline.manifest import ONNX_FILE, TOKENIZER_FILE
from pipeline.measure import (
    fresh_process_load,
    fresh_process_load_onnx,
    interleaved_latency,
    percentile,
)
from pipeline.stages.base import BuildContext

log = logging.getLogger("pipeline.build")


@dataclass(frozen=True)
class Gate:
    name: str
    key: str  # where the measured value lives in results["validate"]["summary"]
    op: str  # ">=" or "<="
    threshold: float
    unit: str = ""

    def passes(self, measured: float) -> bool:
        return measured >= self.threshold if self.op == ">=" else measured <= self.threshold


def gates_for(ctx: BuildContext) -> list[Gate]:
    v = ctx.config.validate
    return [
        Gate("size ratio (original / quantized)", "size_ratio", ">=", v.min_size_ratio, "x"),
        Gate("predict p50 speedup", "speedup_p50", ">=", v.min_speedup, "x"),
        Gate("accuracy drop", "accuracy_drop_points", "<=", v.max_accuracy_drop, " points"),
        Gate("top-1 agreement", "agreement", ">=", v.min_agreement),
        Gate("quantized accuracy", "accuracy_quantized", ">=", v.min_accuracy),
        Gate("quantized predict p95", "p95_ms_quantized", "<=", v.max_p95_ms, " ms"),
        # the onnx variant is held to the quantized variant's thresholds
        Gate("size ratio (original / onnx)", "size_ratio_onnx", ">=", v.min_size_ratio, "x"),
        Gate("onnx predict p50 speedup", "speedup_p50_onnx", ">=", v.min_speedup, "x"),
        Gate(
            "onnx accuracy drop", "accuracy_drop_points_onnx", "<=", v.max_accuracy_drop, " points"
        ),
        Gate("onnx top-1 agreement", "agreement_onnx", ">=", v.min_agreement),
        Gate("onnx accuracy", "accuracy_onnx", ">=", v.min_accuracy),
        Gate("onnx predict p95", "p95_ms_onnx", "<=", v.max_p95_ms, " ms"),
    ]


def _client_predictor(learn):  # noqa: ANN001, ANN202
    """The client's fast torch predict() for a learner, or None when this client has none."""
    try:
        from pipeline.client.predict import Predictor
    except ImportError:
        return None
    try:
        return Predictor(learn)
    except Exception as e:  # an unsupported learner: measured with learn.predict only
        log.warning("client predict() unavailable for this learner: %s", e)
        return None


def _onnx_predictions(clf, texts: list[str]) -> ev.Predictions:  # noqa: ANN001
    import numpy as np

    probs = np.stack([clf.predict(t).probs for t in texts]).astype(np.float32)
    return ev.Predictions([clf.labels[i] for i in probs.argmax(1)], probs)


class Validate:
    name = "validating"

    def skip_reason(self, ctx: BuildContext) -> str | None:
        return None

    def run(self, ctx: BuildContext) -> None:
        c = ctx.config.validate
        texts, truth = list(ctx.eval_data.texts), list(ctx.eval_data.labels)
        original, quantized = ctx.original_learner(), ctx.quantized
        classes = [str(x) for x in original.dls.vocab[1]]

        log.info("accuracy on %d eval texts ...", len(texts))
        p_orig = ev.predict_all(original, texts)
        p_quant = ev.predict_all(quantized, texts)
        from pipeline.client.onnx_model import OnnxClassifier

        onnx_paths = (ctx.build_dir / ONNX_FILE, ctx.build_dir / TOKENIZER_FILE)
        onnx = OnnxClassifier(*onnx_paths, threads=c.threads)
        p_onnx = _onnx_predictions(onnx, texts)
        variants = {}
        for name, p in (("original", p_orig), ("quantized", p_quant), ("onnx", p_onnx)):
            variants[name] = {
                "accuracy": ev.accuracy(p.labels, truth),
                "per_class_accuracy": ev.per_class_accuracy(p.labels, truth, classes),
                "confusion": ev.confusion(p.labels, truth, classes),
                "predictions": p.labels,
            }
        agreement = ev.compare(p_orig, p_quant)
        agreement_onnx = ev.compare(p_orig, p_onnx)

        baseline = None
        if ctx.train_data is not None:
            base_pred = ev.tfidf_baseline(
                list(ctx.train_data.texts),
                list(ctx.train_data.labels),
                texts,
                ctx.config.train.seed,
            )
            baseline = {
                "name": "TF-IDF word+char n-grams, logistic regression",
                "accuracy": ev.accuracy(base_pred, truth),
            }

        n = min(c.latency_queries, len(texts))
        log.info(
            "latency: %d queries per variant, interleaved, %d thread(s), %d warm-up",
            n,
            c.threads,
            c.warmup,
        )
        timed = {"original": original, "quantized": quantized}
        fast = _client_predictor(quantized)
        if fast is not None:
            timed["quantized_client"] = fast  # the torch variant's own fast client predict()
        timed["onnx"] = onnx.predict
        lat = interleaved_latency(
            timed,
            texts[:n],
            threads=c.threads,
            warmup=c.warmup,
        )
        latency = {
            k: {
                "p50_ms": percentile(v, 50),
                "p95_ms": percentile(v, 95),
                "mean_ms": sum(v) / len(v),
                "samples_ms": v,
            }
            for k, v in lat.items()
        }

        log.info("load time and peak RSS, each variant in a fresh process ...")
        loads = {
            name: fresh_process_load(path, c.threads, texts[0])
            for name, path in (("original", ctx.original_path), ("quantized", ctx.quantized_path))
        }
        loads["onnx"] = fresh_process_load_onnx(*onnx_paths, c.threads, texts[0])
        sizes = {
            "original": ctx.original_path.stat().st_size,
            "quantized": ctx.quantized_path.stat().st_size,
            # what a server downloads for the variant: the graph and its tokenizer file
            "onnx": sum(p.stat().st_size for p in onnx_paths),
        }

        def versus_original(name: str, suffix: str, cmp: dict[str, float]) -> dict[str, float]:
            """One variant's numbers against the original ("" suffix keeps the quantized keys)."""
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

        summary = {
            "accuracy_original": variants["original"]["accuracy"],
            "size_original_bytes": sizes["original"],
            "p50_ms_original": latency["original"]["p50_ms"],
            "p95_ms_original": latency["original"]["p95_ms"],
            "load_seconds_original": loads["original"]["load_seconds"],
            "peak_rss_mb_original": loads["original"]["peak_rss_mb"],
            "baseline_accuracy": baseline["accuracy"] if baseline else None,
            **versus_original("quantized", "", agreement),
            **versus_original("onnx", "_onnx", agreement_onnx),
        }
        if "quantized_client" in latency:
            summary["p50_ms_quantized_client"] = latency["quantized_client"]["p50_ms"]
            summary["onnx_vs_quantized_client_p50"] = (
                latency["quantized_client"]["p50_ms"] / latency["onnx"]["p50_ms"]
            )
        gates = []
        for g in gates_for(ctx):
            measured = summary[g.key]
            gates.append(
                {
                    "name": g.name,
                    "key": g.key,
                    "op": g.op,
                    "threshold": g.threshold,
                    "unit": g.unit,
                    "measured": measured,
                    "passed": g.passes(measured),
                }
            )
        ctx.gates_passed = all(g["passed"] for g in gates)
        ctx.results["validate"] = {
            "eval_set": {"path": str(ctx.eval_data.path), "rows": len(texts), "classes": classes},
            "eval_texts": texts,
            "eval_labels": truth,
            "summary": summary,
            "variants": variants,
            "agreement": agreement,
            "agreement_onnx": agreement_onnx,
            "baseline": baseline,
            "latency": {
                "threads": c.threads,
                "warmup": c.warmup,
                "queries": n,
                "interleaved": True,
                **latency,
            },
            "load": loads,
            "sizes": sizes,
            "gates": gates,
            "probabilities": {
                "original": p_orig.probs.tolist(),
                "quantized": p_quant.probs.tolist(),
                "onnx": p_onnx.probs.tolist(),
            },
        }
        log.info(
            "accuracy %.1f%% -> %.1f%%, agreement %.1f%%, size %.1fx, p50 %.1f -> %.1f ms (%.1fx)",
            100 * summary["accuracy_original"],
            100 * summary["accuracy_quantized"],
            100 * summary["agreement"],
            summary["size_ratio"],
            summary["p50_ms_original"],
            summary["p50_ms_quantized"],
            summary["speedup_p50"],
        )
        log.info(
            "onnx: accuracy %.1f%%, agreement %.1f%%, size %.1fx, p50 %.1f ms (%.1fx)%s",
            100 * summary["accuracy_onnx"],
            100 * summary["agreement_onnx"],
            summary["size_ratio_onnx"],
            summary["p50_ms_onnx"],
            summary["speedup_p50_onnx"],
            f", {summary['onnx_vs_quantized_client_p50']:.2f}x the quantized client predict()"
            if "onnx_vs_quantized_client_p50" in summary
            else "",
        )
