"""Stage: report.json, report.md and plots (written even when a gate fails, so it can be read)."""

from __future__ import annotations

import logging
from dataclasses import asdict
from datetime import UTC, datetime

from pipeline import __version__, environment
from pipeline.gitinfo import commit_of
from pipeline.learner_file import learner_name
from pipeline.report import write_report
from pipeline.stages.base import BuildContext
from pipeline.stages.train import describe
from pipeline.typo_aliases import count_in_learner

log = logging.getLogger("pipeline.build")
# [train] keys that say where a learner comes from, not how it was trained
_NOT_TRAINING = (
    "export_pkl",
    "export_pkl_blake3",
    "export_pkl_size",
    "pretrained_weights",
    "pretrained_vocab",
)


def build_meta(ctx: BuildContext) -> dict:
    if "meta" not in ctx.results:
        c = ctx.config
        ctx.results["meta"] = {
            "model": c.model.name,
            "version": c.model.version,
            "description": c.model.description,
            "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "git_commit": commit_of(c.path.parent),
            "tool": f"fastai-release {__version__}",
            "environment": environment.current(ctx.engine or None),
        }
    ctx.results["meta"]["stage_seconds"] = dict(ctx.stage_seconds)
    ctx.results["meta"]["stages_skipped"] = dict(ctx.skipped)
    return ctx.results["meta"]


class Report:
    name = "writing the report"

    def skip_reason(self, ctx: BuildContext) -> str | None:
        return None

    def run(self, ctx: BuildContext) -> None:
        meta = build_meta(ctx)
        learn = ctx.original_learner()
        t = ctx.config.train
        if ctx.config.train.export_pkl is None:
            ctx.results["train"] = {
                "train rows": len(ctx.train_data),
                "vocabulary": len(learn.dls.vocab[0]),
                "typo aliases (misspellings read as a word)": count_in_learner(learn),
                **{k: v for k, v in asdict(t).items() if k not in _NOT_TRAINING},
                **describe(ctx.results.get("training", {})),
            }
        else:
            ctx.results["train"] = {
                "loaded from": learner_name(t),
                **({"pinned blake3": t.export_pkl_blake3.lower()} if t.export_pkl_blake3 else {}),
                "vocabulary": len(learn.dls.vocab[0]),
                "typo aliases (misspellings read as a word)": count_in_learner(learn),
            }
        results = {k: v for k, v in ctx.results.items() if k != "meta"}
        paths = write_report(ctx.build_dir, meta, results)
        log.info("wrote %s", ", ".join(p.name for p in paths))
