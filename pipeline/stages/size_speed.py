"""Validation's size, speed and load measurements of every built variant: `learn.predict` and
client predict() latency, the network's bytes and forward pass alone (what the size and speed
gates read), file sizes and fresh-process loads. `stages.validate` calls them; the tiny-network
benchmark (`benchmarks/gate_ratios.py`) times networks with `torch_forward`/`onnx_forward`."""

from __future__ import annotations

import logging
from typing import Any

from pipeline.manifest import ONNX_FILE, TOKENIZER_FILE
from pipeline.measure import (
    fresh_process_load,
    fresh_process_load_onnx,
    interleaved_latency,
    percentile,
)
from pipeline.stages.base import BuildContext

log = logging.getLogger("pipeline.build")


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


def latencies(ctx: BuildContext, texts: list[str], onnx: Any = None) -> dict[str, dict[str, Any]]:
    """`learn.predict` (and client predict()) latency at batch 1, variants interleaved."""
    c = ctx.config.validate
    n = min(c.latency_queries, len(texts))
    log.info(
        "latency: %d queries per variant, interleaved, %d thread(s), %d warm-up",
        n,
        c.threads,
        c.warmup,
    )
    timed: dict[str, Any] = {"original": ctx.original_learner(), "quantized": ctx.quantized}
    fast = _client_predictor(ctx.quantized)
    if fast is not None:
        timed["quantized_client"] = fast  # the torch variant's own fast client predict()
    if onnx is not None:
        timed["onnx"] = onnx.predict
    lat = interleaved_latency(timed, texts[:n], threads=c.threads, warmup=c.warmup)
    per_variant = {
        k: {
            "p50_ms": percentile(v, 50),
            "p95_ms": percentile(v, 95),
            "mean_ms": sum(v) / len(v),
            "samples_ms": v,
        }
        for k, v in lat.items()
    }
    return {
        "threads": c.threads,
        "warmup": c.warmup,
        "queries": n,
        "interleaved": True,
        **per_variant,
    }


def pickled_bytes(model: Any) -> int:
    """Bytes of `torch.save(model)`, as the network is pickled inside an exported learner."""
    import io

    import torch

    buf = io.BytesIO()
    torch.save(model, buf)
    return buf.tell()


def network_bytes(ctx: BuildContext, onnx: bool) -> dict[str, int]:
    """Bytes of each variant's network alone, what quantization acts on: the pickled
    `learn.model` of the two torch variants (weights, WeightDropout's copies, quantized packed
    params) and the onnx graph (its tokenizer.json is the vocabulary). The rest of a pickle
    (vocabulary, data pipeline) is the same in both and, for a small network, most of the file."""
    out = {
        "original": pickled_bytes(ctx.original_learner().model),
        "quantized": pickled_bytes(ctx.quantized.model),
    }
    if onnx:
        out["onnx"] = (ctx.build_dir / ONNX_FILE).stat().st_size
    return out


def torch_forward(learn: Any, texts: list[str]) -> Any:
    """`f(text)`: one forward pass of the learner's network on the text's batch, encoded before
    (tokenizing and batching are the same work for every torch variant)."""
    import torch

    from pipeline.client.predict import Predictor

    p = Predictor(learn)
    dl = learn.dls.valid
    batches = {}
    for t in dict.fromkeys(texts):
        xb = dl.after_batch(dl.create_batch(dl.before_batch([(p.encode(t),)])))[0]
        batches[t] = xb.as_subclass(torch.Tensor)
    model = learn.model.eval()

    def forward(text: str) -> None:
        with torch.inference_mode():
            if hasattr(model, "reset"):
                model.reset()
            model(batches[text])

    return forward


def onnx_forward(clf: Any, texts: list[str]) -> Any:
    ids = {t: clf.tokenizer.ids(t) for t in dict.fromkeys(texts)}
    return lambda text: clf.probabilities(ids[text])


def network_latencies(
    ctx: BuildContext, texts: list[str], onnx: Any = None
) -> dict[str, dict[str, Any]] | None:
    """The networks' forward pass alone at batch 1 (texts tokenized beforehand), variants
    interleaved: what quantization makes faster, without the per-call cost of `learn.predict`
    that is the same for every variant and, for a small network, most of it. None when the
    client's encoder does not apply to this learner."""
    c = ctx.config.validate
    n = min(c.latency_queries, len(texts))
    sample = texts[:n]
    try:
        timed = {
            "original": torch_forward(ctx.original_learner(), sample),
            "quantized": torch_forward(ctx.quantized, sample),
        }
    except Exception as e:  # an unsupported learner: gated on predict instead (`summarize`)
        log.warning(
            "network forward timing unavailable for this learner (%s): the speed gate reads "
            "predict's latency instead",
            e,
        )
        return None
    if onnx is not None:
        timed["onnx"] = onnx_forward(onnx, sample)
    lat = interleaved_latency(timed, sample, threads=c.threads, warmup=c.warmup)
    return {
        k: {"p50_ms": percentile(v, 50), "p95_ms": percentile(v, 95), "samples_ms": v}
        for k, v in lat.items()
    }


def _onnx_paths(ctx: BuildContext) -> tuple[Any, Any]:
    return ctx.build_dir / ONNX_FILE, ctx.build_dir / TOKENIZER_FILE


def load_measurements(ctx: BuildContext, text: str, onnx: bool) -> dict[str, dict[str, Any]]:
    """Load time and peak RSS of each variant, each in its own fresh interpreter."""
    threads = ctx.config.validate.threads
    log.info("load time and peak RSS, each variant in a fresh process ...")
    loads = {
        name: fresh_process_load(path, threads, text)
        for name, path in (("original", ctx.original_path), ("quantized", ctx.quantized_path))
    }
    if onnx:
        loads["onnx"] = fresh_process_load_onnx(*_onnx_paths(ctx), threads, text)
    return loads


def file_sizes(ctx: BuildContext, onnx: bool) -> dict[str, int]:
    """Bytes a server downloads for each variant (onnx: the graph and its tokenizer file)."""
    sizes = {
        "original": ctx.original_path.stat().st_size,
        "quantized": ctx.quantized_path.stat().st_size,
    }
    if onnx:
        sizes["onnx"] = sum(p.stat().st_size for p in _onnx_paths(ctx))
    return sizes
