"""`release init --time-budget`: the budget read, real training steps timed on the user's rows
(`time_budget_measure.measure_for_budget`, lazily: fastai), and the recipe that fits written into
the starter's [train] and [validate] with what was measured in a comment."""

from __future__ import annotations

import logging
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.errors import ConfigError

if TYPE_CHECKING:
    from pipeline.starter import Starter

log = logging.getLogger("pipeline.init")


def budget_seconds(
    time_budget: str | None, csv_path: Path | None, export_pkl: Path | None
) -> float | None:
    """The --time-budget in seconds (None without one).

    Raises:
        ConfigError: not a duration, or nothing to train (--export-pkl, or no --csv).
    """
    if time_budget is None:
        return None
    from pipeline.time_budget import DURATION_SHAPE, parse_duration

    seconds = parse_duration(time_budget)
    if seconds is None:
        raise ConfigError(f"--time-budget: expected {DURATION_SHAPE}, found {time_budget!r}")
    if export_pkl is not None or csv_path is None:
        raise ConfigError(
            "--time-budget: nothing to train with --export-pkl (the learner is trained); "
            "pass --csv YOUR.csv to train one within the budget"
        )
    return seconds


def measure_plan(s: Starter, seconds: float, config_path: Path, measure: Any) -> tuple[Any, str]:
    """Time real training steps on the training rows now: the plan and a note of the conditions."""
    import tempfile

    from pipeline.config import TrainConfig
    from pipeline.dataset import read_labelled_csv

    train = read_labelled_csv(s.train_csv, s.text_column, s.label_column)  # type: ignore[arg-type]
    defaults = TrainConfig()
    if measure is None:
        from pipeline.time_budget_measure import measure_for_budget as measure
    threads = defaults.threads or os.cpu_count() or 1
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    log.info("timing training steps on this machine for --time-budget (a minute or so) ...")
    with tempfile.TemporaryDirectory(dir=config_path.resolve().parent) as tmp:
        plan = measure(defaults, train, seconds, Path(tmp))
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    # the networks were timed at the thread count the measurement chose (plan.threads), when it
    # compared counts; else at the default
    timed_at = plan.threads or threads
    return plan, f"{when}, {timed_at} thread(s), load average {load} ({os.cpu_count()} CPUs)"


def budget_recipe(
    s: Starter, values: dict[str, object], notes: dict[str, str], comments: dict[str, list[str]]
) -> None:
    """The [train] recipe `--time-budget` chose, with what was measured in a comment under
    [train], and the size and speed gates of the network it chose under [validate]."""
    from pipeline.time_budget import PLAN_SHARE, format_duration

    p = s.plan
    n = p.network
    per_net = "   ".join(
        f"{shape}: {format_duration(t.epoch_seconds)}" for shape, t in p.timings.items()
    )
    comments["train"] = [
        f"`release init --time-budget {s.budget}` timed real training steps on these rows, here:",
        f"  {s.measured}",
        f"  tokenizing the rows and building the learner: {format_duration(p.setup_seconds)}",
        f"  one epoch ({p.timing.train_batches} steps of {p.batch_size} rows + validation), "
        "by network (emb_sz/n_hid/n_layers):",
        f"    {per_net}",
        f"Chosen: the largest network that gets its epochs in {100 * PLAN_SHARE:.0f}% of the budget;",
        f"estimate {format_duration(p.estimate_seconds)} of training. The build times a few steps "
        "again, prints its",
        "estimate, stops at the budget keeping the best epoch, and stops (exit 4) if the model",
        "did not train. A busier machine is slower: re-run init on a quiet one, or set epochs",
        "yourself (docs: training-budget.md).",
        *(f"note: {x}" for x in p.notes),
    ]
    chosen = f"chosen for --time-budget {s.budget}"
    recipe: dict[str, object] = {
        "time_budget": s.budget,
        "emb_sz": n.emb_sz,
        "n_hid": n.n_hid,
        "n_layers": n.n_layers,
        "epochs": p.epochs,
        "lr": n.lr,
        "drop_mult": n.drop_mult,
        "label_smoothing": n.label_smoothing,
        "word_dropout": n.word_dropout,
        "batch_size": p.batch_size,
        "seq_len": p.seq_len,
    }
    if p.threads:
        recipe["threads"] = p.threads
        notes["train.threads"] = "measured: " + ", ".join(
            f"{k} thread(s) {sec:.3f}s a step" for k, sec in p.thread_steps.items()
        )
    for key, value in recipe.items():
        values[f"train.{key}"] = value
    notes["train.epochs"] = f"{chosen}: ~{format_duration(p.timing.epoch_seconds)} an epoch here"
    notes["train.emb_sz"] = f"{chosen}: network {n.shape}"
    notes["train.drop_mult"] = "the demo's regularization, which also lifted CLINC150"
    values["validate.min_size_ratio"] = n.min_size_ratio
    values["validate.min_speedup"] = n.min_speedup
    comments["validate.min_speedup"] = [
        f"The size and speed gates for the {n.shape} network: they compare the network alone",
        "(its bytes and one forward pass) before and after INT8, and a smaller network gains",
        "less (benchmarks/gate_ratios.jsonl; the defaults 5.0 and 4.0 fit 400/1152/3).",
    ]
