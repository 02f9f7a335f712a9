"""Stage: blake3 of every release file and manifest.json (written last: its presence means done)."""

from __future__ import annotations

import logging
from typing import Any

from pipeline import manifest as mf
from pipeline.stages.base import BuildContext
from pipeline.stages.onnx import ExportOnnx
from pipeline.stages.report import build_meta

log = logging.getLogger("pipeline.build")


GOLDEN_MAX_WORDS = 64  # a golden query is asked at every server start: short ones first


def golden_queries(ctx: BuildContext, n: int) -> list[mf.GoldenQuery]:
    """Up to `n` eval queries every variant got right, confidently, spread over the classes.

    One per class before any class gets a second; with more classes than `n`, the classes are
    taken evenly spaced over the list (not its first `n`). A query of up to `GOLDEN_MAX_WORDS`
    words is preferred to a more confident longer one (servers ask them at every start), and
    none is over the client's default input limits, which would fail every smoke test.
    """
    from pipeline.client.limits import DEFAULT_MAX_TOKENS, InputLimits, InputTooLarge

    v = ctx.results["validate"]
    texts, truth = v["eval_texts"], v["eval_labels"]
    names = [x for x in ("original", "quantized", "onnx") if x in v["variants"]]
    preds = [v["variants"][x]["predictions"] for x in names]
    probs = [v["probabilities"][x] for x in names]
    classes = v["eval_set"]["classes"]
    limits = InputLimits()
    by_class: dict[str, list[tuple[bool, float, int]]] = {c: [] for c in classes}
    for i, t in enumerate(truth):
        if not all(p[i] == t for p in preds):
            continue
        words = len(texts[i].split())
        try:
            limits.check(texts[i])
        except InputTooLarge:
            continue
        if words > DEFAULT_MAX_TOKENS // 2:  # tokens outnumber words: stay clear of the limit
            continue
        k = classes.index(t)
        by_class[t].append((words > GOLDEN_MAX_WORDS, -min(p[i][k] for p in probs), i))
    for c in by_class:
        by_class[c].sort()
    order = spread([c for c in classes if by_class[c]], n)
    picked: list[int] = []
    while len(picked) < n and any(by_class.values()):
        for c in order:
            if by_class[c] and len(picked) < n:
                picked.append(by_class[c].pop(0)[2])
    return [mf.GoldenQuery(texts[i], truth[i]) for i in sorted(picked)]


def spread(items: list[str], n: int) -> list[str]:
    """`items` reordered so its first `n` are evenly spaced over it (then the rest, in order)."""
    if n >= len(items):
        return items
    first = [items[(i * len(items)) // n] for i in range(n)]
    chosen = set(first)
    return first + [x for x in items if x not in chosen]


def onnx_environment(ctx: BuildContext) -> dict[str, str]:
    """What wrote the onnx variant (a server needs an onnxruntime that runs this opset)."""
    o = ctx.results.get("onnx", {})
    return {"onnxruntime": o["onnxruntime"], "onnx_opset": str(o["opset"])} if "opset" in o else {}


class WriteManifest:
    name = "computing checksums"

    def skip_reason(self, ctx: BuildContext) -> str | None:
        return None

    def run(self, ctx: BuildContext) -> None:
        meta: dict[str, Any] = build_meta(ctx)
        d = ctx.build_dir
        entries = [
            mf.file_entry(ctx.original_path, "original"),
            mf.file_entry(ctx.quantized_path, "quantized"),
            *(
                [
                    mf.file_entry(d / mf.ONNX_FILE, "onnx"),
                    mf.file_entry(d / mf.TOKENIZER_FILE, "onnx", kind="tokenizer"),
                ]
                if "onnx" in ctx.results["validate"]["variants"]
                else []
            ),
            mf.file_entry(d / "report.md", kind="report"),
            mf.file_entry(d / "report.json", kind="report"),
            *(mf.file_entry(p, kind="plot") for p in sorted(d.glob("*.png"))),
        ]
        v = ctx.results["validate"]
        learn = ctx.original_learner()
        manifest = mf.Manifest(
            model=meta["model"],
            version=meta["version"],
            description=meta["description"],
            labels=tuple(str(x) for x in learn.dls.vocab[1]),
            files=tuple(entries),
            environment={**meta["environment"], **onnx_environment(ctx)},
            created=meta["created"],
            git_commit=meta["git_commit"],
            build_key=ctx.build_key,
            validation={
                "passed": bool(ctx.gates_passed),
                "metrics": v["summary"],
                "thresholds": {
                    g["key"]: {"op": g["op"], "value": g["threshold"]} for g in v["gates"]
                },
                "eval_rows": v["eval_set"]["rows"],
                **(
                    {"variants_skipped": {"onnx": ctx.skipped[ExportOnnx.name]}}
                    if ExportOnnx.name in ctx.skipped
                    else {}
                ),
            },
            golden_queries=tuple(golden_queries(ctx, ctx.config.validate.golden_queries)),
            tool=meta["tool"],
        )
        manifest.write(d)
        log.info(
            "%s: %d files, %d golden queries",
            mf.MANIFEST_NAME,
            len(entries),
            len(manifest.golden_queries),
        )
