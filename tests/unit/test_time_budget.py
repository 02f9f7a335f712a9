"""train.time_budget and train.device: durations, the budget's clock decisions, the progress
line, "did it learn", the recipe init chooses, and the device selection (no torch, no training)."""

from __future__ import annotations

import pytest

from pipeline import config as cfg
from pipeline.errors import ConfigError, InputError
from pipeline.evaluation import training_verdict
from pipeline.time_budget import (
    BudgetWatch,
    Network,
    Progress,
    StepTiming,
    choose,
    fewer_threads_win,
    format_duration,
    parse_duration,
)
from pipeline.training import select_device
from tests.conftest import FIXTURES


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("20m", 1200), ("1h30m", 5400), ("90s", 90), ("1.5h", 5400), (" 2h ", 7200), ("45min", 2700)],
)
def test_durations_parse(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "20", "m", "0m", "twenty minutes", "-5m", "1d"])
def test_non_durations_are_refused(text: str) -> None:
    assert parse_duration(text) is None


def test_durations_format_for_a_person() -> None:
    assert [format_duration(s) for s in (42, 185, 3720, 0.4)] == ["42s", "3m05s", "1h02m", "0s"]


def _with_train(tmp_path, lines: str):  # noqa: ANN001, ANN202
    text = (FIXTURES / "tiny.toml").read_text().replace("[train]\n", "[train]\n" + lines, 1)
    (tmp_path / "release.toml").write_text(text)
    return cfg.load(tmp_path / "release.toml")


def test_config_takes_a_budget_and_a_device(tmp_path) -> None:
    c = _with_train(tmp_path, 'time_budget = "20m"\ndevice = "cpu"\n')
    assert (c.train.time_budget, c.train.device) == ("20m", "cpu")


def test_config_defaults_no_budget_and_auto_device(tmp_path) -> None:
    c = _with_train(tmp_path, "")
    assert (c.train.time_budget, c.train.device) == (None, "auto")


def test_config_names_a_wrong_budget_and_device(tmp_path) -> None:
    with pytest.raises(ConfigError) as e:
        _with_train(tmp_path, 'time_budget = "soon"\ndevice = "tpu"\n')
    text = str(e.value)
    assert 'train.time_budget: expected a duration like "20m"' in text and "'soon'" in text
    assert "train.device: expected one of auto, cpu, cuda, mps" in text and "'tpu'" in text


# --- the budget during a fit ------------------------------------------------------------------


def test_budget_stops_after_the_epoch_when_the_next_would_not_fit() -> None:
    clock = FakeClock()
    w = BudgetWatch(100.0, clock)
    w.start()
    clock.advance(30)
    assert not w.end_epoch(30.0, 1, 10)  # 30 used, the next ends at 60: fits
    clock.advance(30)
    assert not w.end_epoch(30.0, 2, 10)  # 60 used, the next ends at 90: fits
    clock.advance(31)
    assert w.end_epoch(31.0, 3, 10)  # 91 used: another ~31 would end at 122
    assert "would end past the time budget" in w.stopped and "1m31s of 1m40s" in w.stopped


def test_budget_never_stops_the_last_planned_epoch() -> None:
    clock = FakeClock()
    w = BudgetWatch(100.0, clock)
    w.start()
    clock.advance(95)
    assert not w.end_epoch(95.0, 1, 1)
    assert w.stopped == ""


def test_budget_spent_inside_an_epoch() -> None:
    clock = FakeClock()
    w = BudgetWatch(60.0, clock)
    w.start()
    clock.advance(59.9)
    assert not w.spent()
    clock.advance(0.2)
    assert w.spent() and "ran out inside an epoch" in w.stopped
    assert w.end_epoch(60.1, 1, 5)  # the epoch cut short ends the fit


def test_progress_lines_come_every_so_often_with_both_etas() -> None:
    clock = FakeClock()
    p = Progress(epochs=3, every=30.0, clock=clock)
    p.start_fit()
    p.start_epoch()
    clock.advance(10)
    assert p.line(0, 10, 100) is None  # not due yet
    clock.advance(20)
    line = p.line(0, 30, 100)  # 30 s for 30 batches: 70 s left in this epoch, 2 x 100 s after
    assert line == (
        "epoch 1/3: batch 30/100 (30%), 1.00s a batch, this epoch ends in ~1m10s, "
        "all epochs in ~4m30s"
    )
    assert p.line(0, 31, 100) is None
    assert "\r" not in line and "\x1b" not in line


def test_progress_eta_uses_the_slowest_finished_epoch() -> None:
    clock = FakeClock()
    p = Progress(epochs=3, every=1.0, clock=clock)
    p.start_fit()
    p.start_epoch()
    clock.advance(120)
    assert p.end_epoch() == 120
    p.start_epoch()
    clock.advance(50)
    line = p.line(1, 50, 100)
    assert line is not None and "this epoch ends in ~50s, all epochs in ~2m50s" in line


@pytest.mark.parametrize(
    ("accuracy", "loss", "classes", "majority", "baseline", "stuck"),
    [
        # the 2-epoch run: 77 classes, 1.7% against 1.3%, loss 4.39 against ln 77 = 4.34
        (0.017, 4.39, 77, 0.013, None, True),
        (0.017, 4.39, 77, 0.013, 0.914, True),  # and against the baseline at validation
        (0.06, 4.9, 150, 0.0067, None, False),  # 6% closes more than 5% of the gap to 100%
        (0.016, 2.0, 150, 0.0067, None, False),  # its loss says it learnt something
        (0.52, 0.69, 2, 0.50, None, True),
        (0.60, 0.69, 2, 0.50, None, False),
        (0.30, 1.10, 3, 0.40, None, True),  # worse than always answering the majority class
        (0.30, 0.20, 3, 0.40, 0.95, True),  # with a baseline, accuracy decides
        (0.85, 4.9, 150, 0.0067, 0.914, False),
    ],
)
def test_one_did_it_train_rule(
    accuracy: float, loss: float, classes: int, majority: float, baseline: float | None, stuck: bool
) -> None:
    """The rule training applies to its held-out rows and validation to the eval set."""
    v = training_verdict(accuracy, loss, classes, majority, baseline)
    assert v["did_not_train"] is stuck


# --- the recipe init writes -------------------------------------------------------------------

BIG = Network(400, 1152, 3, lr=0.005, min_epochs=8, max_epochs=30)
SMALL = Network(
    200, 400, 2, lr=0.01, min_epochs=6, max_epochs=40, min_size_ratio=4.0, min_speedup=1.5
)


def _timing(epoch_seconds: float) -> StepTiming:
    return StepTiming(
        step_seconds=epoch_seconds / 100, forward_seconds=0.0, train_batches=100, valid_batches=0
    )


def test_choose_takes_the_larger_network_when_its_epochs_fit() -> None:
    plan = choose(1200, 60, {BIG: _timing(100), SMALL: _timing(20)}, batch_size=64, seq_len=72)
    # 0.85 x 1200 - 60 = 960 s: 9 epochs of the large network
    assert (plan.network, plan.epochs) == (BIG, 9)
    assert plan.estimate_seconds == 60 + 9 * 100 <= 1200
    assert not plan.notes


def test_choose_falls_back_to_the_smaller_network_within_its_epoch_cap() -> None:
    plan = choose(1200, 60, {BIG: _timing(200), SMALL: _timing(20)}, batch_size=64, seq_len=72)
    assert (plan.network, plan.epochs) == (SMALL, 40)  # 48 would fit; 40 is the cap


def test_choose_says_when_the_budget_is_too_small_for_any_network() -> None:
    plan = choose(300, 60, {BIG: _timing(200), SMALL: _timing(60)}, batch_size=64, seq_len=72)
    assert (plan.network, plan.epochs) == (SMALL, 3)
    assert "give a larger --time-budget" in plan.notes[0]


def test_choose_never_plans_zero_epochs() -> None:
    plan = choose(60, 120, {SMALL: _timing(60)}, batch_size=64, seq_len=72)
    assert plan.epochs == 1 and plan.notes


# --- train.device -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("wanted", "cuda", "mps", "device"),
    [
        ("auto", False, False, "cpu"),
        ("auto", True, False, "cuda"),
        ("auto", False, True, "mps"),
        ("auto", True, True, "cuda"),
        ("cpu", True, True, "cpu"),
        ("cuda", True, False, "cuda"),
        ("mps", False, True, "mps"),
    ],
)
def test_device_selection(wanted: str, cuda: bool, mps: bool, device: str) -> None:
    assert select_device(wanted, cuda=cuda, mps=mps) == device


@pytest.mark.parametrize(("wanted", "says"), [("cuda", "no CUDA GPU"), ("mps", "no Apple-silicon")])
def test_asking_for_a_missing_gpu_is_an_input_error(wanted: str, says: str) -> None:
    with pytest.raises(InputError) as e:
        select_device(wanted, cuda=False, mps=False)
    assert says in str(e.value) and 'train.device = "auto"' in str(e.value)
    assert e.value.exit_code == 3


# --- release init --time-budget -----------------------------------------------------------------


def _fake_measure(timings: dict[Network, StepTiming], setup: float = 30.0):  # noqa: ANN202
    calls = []

    def measure(t, train, budget_seconds, work_dir):  # noqa: ANN001, ANN202
        calls.append((t, len(train), budget_seconds))
        return choose(budget_seconds, setup, timings, 64, t.seq_len)

    measure.calls = calls  # type: ignore[attr-defined]
    return measure


def _rows_csv(path):  # noqa: ANN001, ANN202
    path.write_text(
        "text,intent\n"
        + "".join(f"how do i pay bill number {i},billing\n" for i in range(30))
        + "".join(f"where is parcel number {i},shipping\n" for i in range(30))
    )
    return path


def test_init_writes_the_recipe_that_fits_with_the_measurement(tmp_path) -> None:
    from pipeline.starter import init_config, summary_lines

    measure = _fake_measure({BIG: _timing(300), SMALL: _timing(40)})
    s = init_config(
        tmp_path / "r.toml",
        csv_path=_rows_csv(tmp_path / "d.csv"),
        time_budget="20m",
        measure=measure,
    )
    # 0.85 x 1200 - 30 = 990 s: 3 epochs of the large network (fewer than 8), 24 of the small
    assert measure.calls[0][1:] == (48, 1200)  # the 48 carved training rows, 20 minutes
    c = cfg.load(tmp_path / "r.toml")
    t = c.train
    assert (t.time_budget, t.emb_sz, t.n_hid, t.n_layers) == ("20m", 200, 400, 2)
    assert (t.epochs, t.lr, t.batch_size, t.seq_len) == (24, 0.01, 64, 72)
    assert (t.drop_mult, t.label_smoothing, t.word_dropout) == (0.5, 0.1, 0.2)
    # the size and speed gates of the chosen network, not the demo network's 5.0 and 4.0
    assert (c.validate.min_size_ratio, c.validate.min_speedup) == (4.0, 1.5)
    text = (tmp_path / "r.toml").read_text()
    assert "# `release init --time-budget 20m` timed real training steps" in text
    assert "400/1152/3: 5m00s   200/400/2: 40s" in text and "load average" in text
    assert "estimate 16m30s of training" in text  # 30 s + 24 x 40 s
    assert any("network 200/400/2, 24 epochs" in line for line in summary_lines(s))


def test_init_names_the_thread_count_the_networks_were_timed_at(tmp_path) -> None:
    """The measurement chose 1 thread (faster than every core on a busy machine): the comment
    says the candidates were timed at 1, not at the default count it started from."""
    from pipeline.starter import init_config

    def measure(t, train, budget_seconds, work_dir):  # noqa: ANN001, ANN202
        timings = {BIG: _timing(300), SMALL: _timing(40)}
        return choose(budget_seconds, 30.0, timings, 64, t.seq_len, 1, {2: 3.0, 1: 0.6})

    init_config(
        tmp_path / "r.toml",
        csv_path=_rows_csv(tmp_path / "d.csv"),
        time_budget="20m",
        measure=measure,
    )
    text = (tmp_path / "r.toml").read_text()
    assert ", 1 thread(s), load average" in text
    assert "measured: 2 thread(s) 3.000s a step, 1 thread(s) 0.600s a step" in text


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [
        ({"time_budget": "soon"}, "--time-budget: expected a duration"),
        ({"time_budget": "20m", "export_pkl": "x.pkl"}, "nothing to train with --export-pkl"),
    ],
)
def test_init_refuses_a_budget_it_cannot_use(tmp_path, kwargs, says) -> None:
    from pipeline.starter import init_config

    data = _rows_csv(tmp_path / "d.csv")
    with pytest.raises(ConfigError, match=says):
        init_config(tmp_path / "r.toml", csv_path=data, eval_csv=data, **kwargs)
    assert not (tmp_path / "r.toml").exists()


@pytest.mark.parametrize(
    ("steps", "threads"),
    [({2: 0.5, 1: 0.9}, 2), ({2: 0.5, 1: 0.54}, 1), ({2: 13.3, 1: 2.4}, 1), ({4: 1.0, 2: 1.0}, 2)],
)
def test_the_fewest_threads_within_ten_percent_of_the_fastest(steps, threads) -> None:
    assert fewer_threads_win(steps) == threads


def test_the_report_says_where_and_how_training_ran() -> None:
    from pipeline.stages.train import describe

    facts = {
        "device": "cuda",
        "estimate": {"estimate_seconds": 600.0},
        "train_seconds": 512.3,
        "epochs_run": 7,
        "kept_epoch": 6,
        "stopped": "another epoch (~1m10s) would end past the time budget",
    }
    shown = describe(facts)
    assert shown["trained on"] == "cuda" and shown["estimated before training (s)"] == 600.0
    assert shown["epochs run"] == 7 and shown["epoch kept (best validation accuracy)"] == 6
    assert "past the time budget" in str(shown["stopped early"])
    assert describe({}) == {}  # a loaded learner: nothing was trained here


def test_a_failed_accuracy_gate_names_the_budget_that_stopped_training() -> None:
    import dataclasses

    from pipeline.stages.gates import gate_advice_for

    c = cfg.load(FIXTURES / "tiny.toml")
    c = dataclasses.replace(c, train=dataclasses.replace(c.train, time_budget="3m", epochs=5))
    stopped = {"epochs_run": 1, "stopped": "another epoch (~2m06s) would end past the time budget"}
    failed = {"key": "baseline_deficit_points", "passed": False}
    advice = gate_advice_for(failed, c, {}, stopped)
    assert advice.startswith("train.time_budget (3m) stopped training after 1 of 5 epochs (")
    assert "Otherwise: a TF-IDF" in advice
    assert "time_budget" not in gate_advice_for(failed, c, {}, {"epochs_run": 5})
    size = {"key": "network_size_ratio", "passed": False}
    assert "time_budget" not in gate_advice_for(size, c, {}, stopped)


def test_no_full_training_batch_is_said_and_not_timed(caplog) -> None:  # noqa: ANN001
    # fastai drops an incomplete last batch: fewer rows than batch_size give an empty loader,
    # which time_steps cannot time (it raised IndexError inside a build)
    from types import SimpleNamespace

    from pipeline.time_budget import time_steps
    from pipeline.training_callbacks import estimate_fit

    dls = SimpleNamespace(
        train=type("Empty", (), {"bs": 64, "__len__": lambda self: 0})(),
        train_ds=[0] * 10,
        loaders=[],
    )
    learn = SimpleNamespace(dls=dls, model=None, loss_func=None)
    with caplog.at_level("WARNING", logger="pipeline"):
        facts = estimate_fit(learn, 3, "classifier")
    assert facts == {"estimate_seconds": 0.0, "train_batches": 0}
    assert "no full training batch (10 training rows, batch size 64)" in caplog.text
    with pytest.raises(ValueError, match="no training batch to time"):
        time_steps(learn)
