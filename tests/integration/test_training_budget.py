"""The time budget's callbacks on real fastai fits: stop at the budget keeping the best epoch,
progress lines with an ETA, step timing that changes nothing, and the near-chance stop.

The callback tests fit a two-feature linear fastai Learner on synthetic data (milliseconds) with
a clock the test moves; the text tests train the tiny AWD_LSTM on 140 demo rows.
"""

from __future__ import annotations

import csv
import dataclasses
import logging
import math
import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline import config
from pipeline.dataset import read_labelled_csv
from pipeline.errors import GateFailed
from pipeline.time_budget import BudgetWatch, time_steps
from pipeline.training import train_classifier
from pipeline.training_callbacks import fit

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _linear_learner(n_train: int = 48, n_valid: int = 16, bs: int = 8):  # noqa: ANN202
    from fastai.data.core import DataLoaders
    from fastai.learner import Learner
    from fastai.losses import CrossEntropyLossFlat
    from fastai.metrics import accuracy

    g = torch.Generator().manual_seed(0)
    x = torch.randn(n_train + n_valid, 2, generator=g)
    y = (x[:, 0] > 0).long()
    items = list(zip(x, y, strict=True))
    dls = DataLoaders.from_dsets(items[:n_train], items[n_train:], bs=bs, device="cpu")
    torch.manual_seed(0)
    return Learner(dls, torch.nn.Linear(2, 2), loss_func=CrossEntropyLossFlat(), metrics=accuracy)


def _script(clock: FakeClock, seconds_per_batch: float, accuracies: list[float] | None = None):  # noqa: ANN202
    """A callback that moves the clock on every training batch and, when given, replaces each
    epoch's validation accuracy (so which epoch is best is the test's choice), keeping a copy of
    the weights at the end of each epoch."""
    from fastai.callback.core import Callback

    class Script(Callback):
        order = 60  # after the Recorder, before KeepBest (91) and TimeBudget (92)

        def before_fit(self) -> None:
            self.batches = 0
            self.weights: list[torch.Tensor] = []

        def after_batch(self) -> None:
            if self.training:
                self.batches += 1
                clock.now += seconds_per_batch

        def after_epoch(self) -> None:
            if accuracies is not None:
                i = self.recorder.metric_names[1:].index("accuracy")
                self.recorder.log[1 + i] = accuracies[self.epoch]
            self.weights.append(self.model.weight.detach().clone())

    return Script()


def test_the_budget_ends_the_fit_and_the_best_epoch_is_restored(caplog) -> None:
    learn, clock = _linear_learner(), FakeClock()  # 6 training batches an epoch
    script = _script(clock, 1.0, [0.5, 0.9, 0.7, 0.95, 0.99])
    watch, kept = BudgetWatch(20.0, clock), {}
    with caplog.at_level(logging.INFO, logger="pipeline.train"):
        fit(learn, 5, 1e-2, 0.0, "test", False, (script,), watch=watch, kept=kept, clock=clock)
    # epochs end at 6, 12 and 18 s; a fourth would end at 24 > 20: three epochs run
    assert script.batches == 18 and len(learn.recorder.values) == 3
    assert kept["epoch"] == 2 and kept["epochs_run"] == 3
    assert torch.equal(learn.model.weight, script.weights[1])
    assert not torch.equal(script.weights[1], script.weights[2])
    assert "would end past the time budget" in watch.stopped
    messages = [r.getMessage() for r in caplog.records]
    assert any("stopped after epoch 3 of 5" in m for m in messages), messages
    assert any("kept epoch 2 of 3" in m for m in messages), messages


def test_the_last_epoch_is_kept_when_it_is_the_best() -> None:
    learn, clock = _linear_learner(), FakeClock()
    script = _script(clock, 1.0, [0.5, 0.6, 0.7])
    kept: dict = {}
    fit(learn, 3, 1e-2, 0.0, "test", False, (script,), watch=BudgetWatch(600, clock), kept=kept)
    assert kept["epoch"] == 3 and torch.equal(learn.model.weight, script.weights[2])


def test_a_spent_budget_cuts_the_epoch_short_and_still_validates() -> None:
    learn, clock = _linear_learner(), FakeClock()
    script = _script(clock, 1.0)
    watch, kept = BudgetWatch(4.0, clock), {}
    fit(learn, 5, 1e-2, 0.0, "test", False, (script,), watch=watch, kept=kept, clock=clock)
    assert script.batches == 4  # of 6
    assert len(learn.recorder.values) == 1 and learn.recorder.values[0][1] is not None
    assert "ran out inside an epoch" in watch.stopped and kept["epoch"] == 1


def test_progress_lines_inside_an_epoch(caplog) -> None:
    learn, clock = _linear_learner(n_train=96), FakeClock()  # 12 batches
    with caplog.at_level(logging.INFO, logger="pipeline.train"):
        fit(learn, 2, 1e-2, 0.0, "classifier", False, (_script(clock, 10.0),), clock=clock)
    lines = [r.getMessage() for r in caplog.records if "batch " in r.getMessage()]
    # one line every 30 s of the (fake) clock: after batches 3, 6, 9 of each epoch
    assert lines[0] == (
        "classifier epoch 1/2: batch 3/12 (25%), 10.00s a batch, this epoch ends in ~1m30s, "
        "all epochs in ~3m30s"
    )
    assert len(lines) == 6 and "epoch 2/2: batch 9/12" in lines[-1]


def test_timing_steps_reads_the_clock_and_changes_nothing() -> None:
    learn = _linear_learner()
    ticks = iter(range(1000))
    clock = lambda: 0.5 * next(ticks)  # noqa: E731  every reading is 0.5 s after the last
    before = learn.model.weight.detach().clone()
    rng = (random.getstate(), np.random.get_state(), torch.get_rng_state())
    timing = time_steps(learn, steps=3, warmup=1, clock=clock)
    assert (timing.step_seconds, timing.forward_seconds, timing.steps_timed) == (0.5, 0.5, 3)
    assert (timing.train_batches, timing.valid_batches) == (6, 2)
    assert timing.epoch_seconds == 6 * 0.5 + 2 * 0.5
    assert torch.equal(learn.model.weight, before) and learn.model.weight.grad is None
    assert random.getstate() == rng[0] and torch.equal(torch.get_rng_state(), rng[2])
    assert all((a == b).all() for a, b in zip(np.random.get_state()[1:2], rng[1][1:2], strict=True))


# --- on text -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> tuple[config.ReleaseConfig, object]:
    """The tiny config on 20 demo rows per class (140 rows): a fit takes about a second."""
    work = tmp_path_factory.mktemp("budget")
    with (ROOT / "pipeline" / "data" / "train.csv").open(encoding="utf-8", newline="") as f:
        header, *rows = list(csv.reader(f))
    by_label: dict[str, list[list[str]]] = {}
    for r in rows:
        by_label.setdefault(r[header.index("label")], []).append(r)
    picked = [r for rs in by_label.values() for r in rs[:20]]
    with (work / "train.csv").open("w", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows([header, *picked])
    toml = (FIXTURES / "tiny.toml").read_text().replace('"bundled:train.csv"', '"train.csv"')
    # one thread: two on a shared 2-core machine made the estimate test 13x slower (84 s)
    toml = toml.replace("[train]\n", "[train]\nthreads = 1\n", 1)
    (work / "release.toml").write_text(toml)
    c = config.load(work / "release.toml")
    return c, read_labelled_csv(c.data.train_csv, "text", "label")


def _state(learn) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in learn.model.state_dict().items()}


def test_the_estimate_changes_no_weight(small, tmp_path: Path, caplog) -> None:
    c, train = small
    # small batches: the language model's loader has several, shuffled again every epoch
    c = dataclasses.replace(
        c,
        train=dataclasses.replace(c.train, lm_epochs=2, time_budget="1h", batch_size=8, seq_len=16),
    )
    facts: dict = {}
    with caplog.at_level(logging.INFO, logger="pipeline.train"):
        timed = _state(train_classifier(c, train, tmp_path / "a", facts=facts))
    plain = _state(train_classifier(c, train, tmp_path / "b", estimate=False))
    assert timed.keys() == plain.keys()
    assert all(torch.equal(timed[k], plain[k]) for k in timed)
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("language model: estimate ") for m in messages), messages
    assert any(m.startswith("classifier: estimate ") and "time budget left" in m for m in messages)
    assert facts["device"] == "cpu" and facts["estimate"]["train_batches"] >= 1
    assert facts["epochs_run"] == 1 and facts["kept_epoch"] == 1


def test_a_model_that_learnt_nothing_stops_the_build(small, tmp_path: Path) -> None:
    c, train = small
    c = dataclasses.replace(c, train=dataclasses.replace(c.train, lr=1e-7))
    with pytest.raises(GateFailed) as e:
        train_classifier(c, train, tmp_path, estimate=False, stop_near_chance=True)
    text = str(e.value)
    assert e.value.exit_code == 4
    # the sentence validation says of an eval set (one rule, `evaluation.training_verdict`)
    assert text.startswith("the model did not train: validation (the 14 held-out training rows, ")
    assert "7 classes) loss " in text and "for a uniform guess, accuracy " in text
    assert "more epochs (train.epochs = 1 now)" in text and "(train.lr = 1e-07 now)" in text
    assert "Nothing was quantized or released" in text


def test_near_chance_only_warns_when_the_majority_gate_is_off(
    small, tmp_path: Path, caplog
) -> None:
    c, train = small
    c = dataclasses.replace(c, train=dataclasses.replace(c.train, lr=1e-7))
    facts: dict = {}
    with caplog.at_level(logging.WARNING, logger="pipeline.train"):
        train_classifier(c, train, tmp_path, estimate=False, stop_near_chance=False, facts=facts)
    assert any(
        "the model did not train" in r.getMessage() and "going on" in r.getMessage()
        for r in caplog.records
    )
    assert facts["valid_accuracy"] <= facts["valid_majority"] + 0.05
    assert facts["valid_loss"] >= 0.9 * math.log(7)


def test_init_times_real_steps_with_the_clock_it_is_given(small, tmp_path: Path) -> None:
    from pipeline.config import TrainConfig
    from pipeline.time_budget import Network
    from pipeline.time_budget_measure import measure_for_budget

    c, train = small
    ticks = iter(range(100_000))
    clock = lambda: 0.25 * next(ticks)  # noqa: E731
    nets = (
        Network(24, 32, 2, lr=0.01, min_epochs=60, max_epochs=100),
        Network(16, 24, 1, lr=0.02, min_epochs=2, max_epochs=5),
    )
    plan = measure_for_budget(TrainConfig(), train, 60.0, tmp_path, candidates=nets, clock=clock)
    # every step and forward pass reads the clock twice apart: 0.25 s each; 140 rows, 10% held
    # out, 32 a batch: 3 full training batches and 1 validation batch; tokenizing took one tick
    t = plan.timings["16/24/1"]
    assert (t.step_seconds, t.forward_seconds, t.train_batches, t.valid_batches) == (
        0.25,
        0.25,
        3,
        1,
    )
    assert plan.setup_seconds == 0.25 and plan.batch_size == 32
    # 0.85 x 60 - 0.25 s fits 50 epochs of 1 s: the large one needs 60, the small one caps at 5
    assert (plan.network, plan.epochs) == (nets[1], 5)
    # every thread count timed the same (the fake clock): the fewest threads win
    assert plan.threads == (1 if (os.cpu_count() or 1) > 1 else 0)


def test_the_build_stops_after_training_when_nothing_was_learnt(small, tmp_path: Path) -> None:
    from pipeline.build import build

    c, _ = small
    text = c.path.read_text()
    text = text.replace("lr = 0.01", "lr = 1e-7").replace(
        "beat_majority = false", "beat_majority = true"
    )
    text = text.replace('"train.csv"', f'"{c.data.train_csv}"')
    (tmp_path / "release.toml").write_text(text)
    with pytest.raises(GateFailed) as e:
        build(config.load(tmp_path / "release.toml"))
    assert e.value.exit_code == 4
    assert "the model did not train: validation (the 14 held-out training rows" in str(e.value)
    built = tmp_path / "artifacts" / "build" / "0.0.1"
    assert not (built / "export_quantized.pkl").exists() and not (built / "train.key").exists()
