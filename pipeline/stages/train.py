"""Stage: train the classifier from the CSV, or load a given export.pkl. Skipped when unchanged."""

from __future__ import annotations

import json
import logging
import shutil
import sys
from dataclasses import asdict

from pipeline import atomic
from pipeline.checksums import blake3_bytes, blake3_file
from pipeline.environment import library_versions
from pipeline.errors import InputError
from pipeline.learner_file import input_digest, labels_of, load_exported, place
from pipeline.stages.base import BuildContext
from pipeline.stages.quantize import export_learner
from pipeline.training import train_classifier, training_device

log = logging.getLogger("pipeline.build")
KEY_FILE = "train.key"
FACTS_FILE = "train.json"  # how the last training ran (device, epochs, estimate); not published


def train_key(ctx: BuildContext) -> str:
    """blake3 over the inputs that decide the trained model: data, train config, library versions."""
    c = ctx.config
    parts = {
        "train": {k: str(v) for k, v in asdict(c.train).items()},
        "columns": [c.data.text_column, c.data.label_column],
        "data": blake3_file(c.data.train_csv) if c.data.train_csv else None,
        "export_pkl": input_digest(c.train),  # a location's pin: no download for a key
        "libraries": library_versions(),
        # "auto" trains on a GPU when there is one: a model trained elsewhere is another model
        "device": training_device(c.train.device) if c.train.export_pkl is None else None,
    }
    return blake3_bytes(json.dumps(parts, sort_keys=True).encode())


def describe(facts: dict) -> dict[str, object]:
    """How training ran, as the report's "Training" section lists it."""
    if not facts:
        return {}
    out: dict[str, object] = {"trained on": facts.get("device", "cpu")}
    if "estimate" in facts:
        out["estimated before training (s)"] = facts["estimate"]["estimate_seconds"]
    for key, name in (
        ("train_seconds", "training took (s)"),
        ("epochs_run", "epochs run"),
        ("kept_epoch", "epoch kept (best validation accuracy)"),
        ("stopped", "stopped early"),
        ("language_model_stopped", "language model stopped early"),
        ("valid_accuracy", "validation accuracy (held-out training rows)"),
        ("valid_majority", "majority class share of those rows"),
        ("valid_loss", "validation loss (those rows, unsmoothed)"),
        ("reused", "reused from an earlier build"),
    ):
        if key in facts:
            out[name] = facts[key]
    return out


class TrainOrLoad:
    def __init__(self, loading: bool = False):
        self.name = "loading the learner" if loading else "training"

    def skip_reason(self, ctx: BuildContext) -> str | None:
        ctx.train_key = train_key(ctx)
        if ctx.force:
            return None
        key_file = ctx.build_dir / KEY_FILE
        if (
            ctx.original_path.is_file()
            and key_file.is_file()
            and key_file.read_text().strip() == ctx.train_key
        ):
            facts = ctx.build_dir / FACTS_FILE
            if facts.is_file():
                ctx.results["training"] = json.loads(facts.read_text()) | {"reused": True}
            return f"inputs unchanged since the last build ({ctx.original_path.name} reused; --force retrains)"
        return None

    def run(self, ctx: BuildContext) -> None:
        c = ctx.config
        ctx.build_dir.mkdir(parents=True, exist_ok=True)
        (ctx.build_dir / KEY_FILE).unlink(missing_ok=True)
        (ctx.build_dir / FACTS_FILE).unlink(missing_ok=True)
        facts: dict = {}
        if c.train.export_pkl is not None:
            # copied or downloaded, and checked against its pin, before anything unpickles it
            name = place(c.train, ctx.original_path, config_name=c.path.name)
            log.info("loading %s", name)
            learn = load_exported(ctx.original_path, name=name)
            ctx.learner = learn
            if c.onnx.enabled is True and (why := ctx.onnx_unsupported_reason()):
                from pipeline.stages.onnx import required_but_unsupported

                raise required_but_unsupported(ctx, why)  # before any long work
        else:
            learn = train_classifier(
                c,
                ctx.train_data,
                ctx.build_dir / "work",
                interactive=sys.stderr.isatty(),
                facts=facts,
                stop_near_chance=c.validate.beat_majority,
            )
            export_learner(learn, ctx.original_path)
            shutil.rmtree(ctx.build_dir / "work", ignore_errors=True)
            # The later stages work on the learner read back from export.pkl, as a build that
            # skips training does: the learner fresh from training shares objects (strings,
            # spaCy's special cases in another order) that its pickle holds as copies, so the
            # quantized pickle made from it had other bytes than an unchanged rebuild's.
            learn = load_exported(ctx.original_path)
        for data in (x for x in (ctx.eval_data, ctx.challenge_data) if x is not None):
            unknown = sorted(set(data.labels) - set(labels_of(learn)))
            if unknown:
                raise InputError(
                    f"{data.path}: labels {', '.join(unknown)} are not among the model's classes "
                    f"({', '.join(labels_of(learn))})"
                )
        ctx.learner = learn
        if facts:
            ctx.results["training"] = facts
            atomic.write_text(ctx.build_dir / FACTS_FILE, json.dumps(facts, indent=1) + "\n")
        atomic.write_text(ctx.build_dir / KEY_FILE, ctx.train_key + "\n")
        ctx.trained_learner_kept = c.train.export_pkl is None
