"""Stage: read and check the labelled CSVs before any expensive work."""

from __future__ import annotations

import logging

from pipeline.dataset import (
    LabelledTexts,
    NearCopyIndex,
    check_challenge,
    check_eval_against_train,
    read_labelled_csv,
)
from pipeline.stages.base import BuildContext

log = logging.getLogger("pipeline.build")


class CheckInputs:
    name = "checking inputs"

    def skip_reason(self, ctx: BuildContext) -> str | None:
        return None

    def run(self, ctx: BuildContext) -> None:
        d = ctx.config.data
        where = ctx.config.path.name
        train_index: NearCopyIndex | None = None  # built once, asked for eval and challenge
        ctx.eval_data = read_labelled_csv(
            d.eval_csv, d.text_column, d.label_column, min_classes=1, config_name=where
        )
        if d.train_csv is not None:
            ctx.train_data = read_labelled_csv(
                d.train_csv, d.text_column, d.label_column, config_name=where
            )
            check_eval_against_train(ctx.train_data, ctx.eval_data)
            train_index = NearCopyIndex(ctx.train_data.texts)
            _warn_near_copies(ctx.eval_data, train_index, "eval")
            log.info(
                "train: %d rows, %d labels; eval: %d rows",
                len(ctx.train_data),
                len(ctx.train_data.classes),
                len(ctx.eval_data),
            )
        else:
            log.info("eval: %d rows, %d labels", len(ctx.eval_data), len(ctx.eval_data.classes))
        if d.challenge_csv is not None:
            ctx.challenge_data = read_labelled_csv(
                d.challenge_csv, d.text_column, d.label_column, min_classes=1
            )
            check_challenge(ctx.challenge_data, ctx.train_data, ctx.eval_data)
            if train_index is not None:
                _warn_near_copies(ctx.challenge_data, train_index, "challenge")
            log.info("challenge: %d rows", len(ctx.challenge_data))


def _warn_near_copies(held_out: LabelledTexts, train: NearCopyIndex, name: str) -> None:
    """Not refused (a short set may share phrasing honestly), but said: accuracy on near copies
    of training rows overstates how the model does on new text."""
    pairs = train.near_copies(held_out.texts)
    if pairs:
        held, seen = pairs[0]
        log.warning(
            "%s: %d of %d texts share 70%%+ of their words with a training text (e.g. %r ~ %r); "
            "their accuracy overstates how the model does on new phrasing",
            name,
            len({h for h, _ in pairs}),
            len(held_out),
            held,
            seen,
        )
