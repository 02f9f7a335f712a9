"""Stage: the pickle-free variant: tokenizer.json + model_int8.onnx, gated on token-id parity.

The tokenizer file is checked before anything is exported: the client's token ids of every train
and eval text must be fastai's (`learn.predict`'s), or the stage fails listing the first
differences. The graph is exported from the stripped float model (TorchScript exporter, opset 17)
and quantized by onnxruntime (dynamic INT8: LSTM, MatMul, the embedding's Gather).
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from importlib import metadata
from pathlib import Path

from pipeline import atomic
from pipeline.client.limits import InputLimits
from pipeline.client.tokenizer import TextTokenizer, stock_language
from pipeline.errors import GateFailed, InputError
from pipeline.manifest import ONNX_FILE, TOKENIZER_FILE
from pipeline.onnx_export import OPSET, export_fp32, quantize_int8, token_parity, tokenizer_spec
from pipeline.stages.base import BuildContext

log = logging.getLogger("pipeline.build")
SHOWN_DIFFERENCES = 10


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def required_but_unsupported(ctx: BuildContext, reason: str) -> InputError:
    """The error for `[onnx] enabled = true` and a learner the export cannot reproduce."""
    return InputError(
        f"{reason}; {ctx.config.path.name}: onnx.enabled = true requires the onnx variant: set "
        'it to "auto" to release the pickle variants without it, or train with fastai\'s default '
        "tokenizer (SpacyTokenizer, default rules)"
    )


class ExportOnnx:
    name = "exporting onnx"

    def skip_reason(self, ctx: BuildContext) -> str | None:
        enabled = ctx.config.onnx.enabled
        reason = None
        if enabled is False:
            reason = f"onnx.enabled = false in {ctx.config.path.name}"
        elif enabled == "auto" and (why := ctx.onnx_unsupported_reason()):
            reason = (
                f"this learner is not supported by the onnx export: {why}; the pickle variants "
                f'are released without it (onnx.enabled = "auto" in {ctx.config.path.name})'
            )
        if reason:
            # an earlier build's onnx files would otherwise be validated and published with this one
            for name in (ONNX_FILE, TOKENIZER_FILE):
                (ctx.build_dir / name).unlink(missing_ok=True)
        return reason

    def run(self, ctx: BuildContext) -> None:
        if why := ctx.onnx_unsupported_reason():
            raise required_but_unsupported(ctx, why)
        learn = ctx.original_learner()
        spec = tokenizer_spec(learn)
        tokenizer = TextTokenizer(spec, TOKENIZER_FILE, limits=InputLimits.unlimited())
        if stock_language(spec["tokenizer"]) is None:
            log.warning(
                "%s: the learner's spaCy tokenizer is not a stock one (spaCy %s, any language): "
                "servers load the onnx variant only from a signed or pinned release or a local "
                "directory (pipeline/client/spacy_stock.py)",
                TOKENIZER_FILE,
                spec["tokenizer"].get("spacy_version", "?"),
            )
        sets = {"eval": list(ctx.eval_data.texts)}
        if ctx.train_data is not None:
            sets["train"] = list(ctx.train_data.texts)
        if ctx.challenge_data is not None:
            sets["challenge"] = list(ctx.challenge_data.texts)
        parity, differences = {}, []
        for name, texts in sets.items():
            diffs = token_parity(learn, tokenizer, texts)
            parity[name] = {"texts": len(texts), "identical": len(texts) - len(diffs)}
            differences += [(name, d) for d in diffs]
        ctx.results["onnx"] = {"token_parity": parity}
        if differences:
            total = sum(p["texts"] for p in parity.values())
            shown = "\n".join(
                f"  - {name} {d.describe()}" for name, d in differences[:SHOWN_DIFFERENCES]
            )
            counts = ", ".join(
                f"{k} {v['identical']}/{v['texts']} identical" for k, v in parity.items()
            )
            raise GateFailed(
                f"token-id parity: the client's tokenizer differs from fastai's on {len(differences)} "
                f"of {total} texts ({counts}); "
                f"the onnx variant would answer them differently, so nothing is released. First "
                f"differences:\n{shown}\nReport it with these texts; a learner built with other "
                "tokenizer settings may need a newer fastai-release"
            )
        log.info(
            "token ids identical to fastai's on %s",
            ", ".join(f"{v['identical']}/{v['texts']} {k} texts" for k, v in parity.items()),
        )
        atomic.write_text(
            ctx.build_dir / TOKENIZER_FILE, json.dumps(spec, ensure_ascii=False, indent=1) + "\n"
        )
        work = tempfile.mkdtemp(prefix=".onnx-", dir=ctx.build_dir)
        try:
            fp32 = export_fp32(ctx.stripped, Path(work) / "model_fp32.onnx")
            int8 = quantize_int8(fp32, Path(work) / ONNX_FILE)
            fp32_bytes = fp32.stat().st_size
            int8.replace(ctx.build_dir / ONNX_FILE)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        ctx.results["onnx"].update(
            {
                "opset": OPSET,
                "fp32_bytes": fp32_bytes,
                "int8_bytes": (ctx.build_dir / ONNX_FILE).stat().st_size,
                "onnx": _version("onnx"),
                "onnxruntime": _version("onnxruntime"),
                "spacy": spec["tokenizer"]["spacy_version"],
                "vocabulary": len(spec["vocab"]),
                "chunking": spec["chunking"],
            }
        )
        log.info(
            "%s (%.1f MB, fp32 graph %.1f MB) and %s written",
            ONNX_FILE,
            ctx.results["onnx"]["int8_bytes"] / 1e6,
            fp32_bytes / 1e6,
            TOKENIZER_FILE,
        )
