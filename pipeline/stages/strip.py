"""Stage: a float copy of the learner without training-only wrappers (the base for quantizing)."""

from __future__ import annotations

import logging

from pipeline.quantization import float_tensor_bytes, strip
from pipeline.stages.base import BuildContext

log = logging.getLogger("pipeline.build")


class Strip:
    name = "stripping training wrappers"

    def skip_reason(self, ctx: BuildContext) -> str | None:
        return None

    def run(self, ctx: BuildContext) -> None:
        learn = ctx.original_learner()
        ctx.stripped = strip(learn)
        before, after = float_tensor_bytes(learn.model), float_tensor_bytes(ctx.stripped.model)
        ctx.results["strip"] = {"original_tensor_bytes": before, "stripped_tensor_bytes": after}
        log.info(
            "WeightDropout/EmbeddingDropout removed: %.1f MB -> %.1f MB of float tensors",
            before / 1e6,
            after / 1e6,
        )
