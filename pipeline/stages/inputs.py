"""Stage: read and check the labelled CSVs before any expensive work."""

from __future__ import annotations

import logging

from pipeline.dataset import check_eval_against_train, read_labelled_csv
from pipeline.stages.base import BuildContext

log = logging.getLogger("pipeline.build")


class CheckInputs:
    name = "checking inputs"

    def skip_reason(self, ctx: BuildContext) -> str | None:
        return None

    def run(self, ctx: BuildContext) -> None:
        d = ctx.config.data
        where = ctx.config.path.name
        ctx.eval_data = read_labelled_csv(
            d.eval_csv, d.text_column, d.label_column, min_classes=1, config_name=where
        )
        if d.train_csv is not None:
            ctx.train_data = read_labelled_csv(
                d.train_csv, d.text_column, d.label_column, config_name=where
            )
            check_eval_against_train(ctx.train_data, ctx.eval_data)
            log.info(
                "train: %d rows, %d labels; eval: %d rows",
                len(ctx.train_data),
                len(ctx.train_data.classes),
                len(ctx.eval_data),
            )
        else:
            log.info("eval: %d rows, %d labels", len(ctx.eval_data), len(ctx.eval_data.classes))
