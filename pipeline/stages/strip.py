"""Stage: a float copy of the learner without training-only wrappers (the base for quantizing)."""

from __future__ import annotations

import logging

from pipeline.quantization import parameter_bytes, strip
from pipeline.stages.base import BuildContext

log = logging.getLogger("pipeline.build")


class Strip:
    name = "stripping training wrappers"

    def skip_reason(self, ctx: BuildContext) -> str | None:
        return None

    def run(self, ctx: BuildContext) -> None:
        learn = ctx.original_learner()
        ctx.stripped = strip(learn)
        before, after = parameter_bytes(learn.model), parameter_bytes(ctx.stripped.model)
        ctx.results["strip"] = {
            "original_tensor_bytes": before["float"],
            "stripped_tensor_bytes": after["float"],
        }
        log.info(
            "WeightDropout/EmbeddingDropout removed: %.1f MB -> %.1f MB of float tensors",
            before["float"] / 1e6,
            after["float"] / 1e6,
        )
