from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import pytest

from pipeline import config
from pipeline.errors import GateFailed, InputError
from pipeline.stages import BuildContext, run_stages, stages_for
from pipeline.stages.base import StageError
from pipeline.stages.gates import CheckGates
from pipeline.stages.validate import Gate, gates

ROOT = Path(__file__).resolve().parents[2]


class Recorder:
    def __init__(self, name: str, skip: str | None = None, fail: Exception | None = None):
        self.name, self.skip, self.fail, self.ran = name, skip, fail, False

    def skip_reason(self, ctx):
        return self.skip

    def run(self, ctx):
        self.ran = True
        if self.fail:
            raise self.fail


@pytest.fixture
def ctx(tmp_path: Path) -> BuildContext:
    return BuildContext(config=config.load(ROOT / "release.toml"), build_dir=tmp_path)


def test_runner_runs_in_order_logs_skips_and_times(ctx, caplog) -> None:
    stages = [Recorder("first"), Recorder("second", skip="inputs unchanged"), Recorder("third")]
    with caplog.at_level(logging.INFO, logger="pipeline"):
        run_stages(stages, ctx)
    assert [s.ran for s in stages] == [True, False, True]
    assert "[2/3] second: skipped, inputs unchanged" in caplog.text
    assert set(ctx.stage_seconds) == {"first", "third"}
    assert ctx.skipped == {"second": "inputs unchanged"}


def test_runner_prefixes_errors_with_the_stage_and_keeps_exit_code(ctx) -> None:
    later = Recorder("later")
    with pytest.raises(InputError, match="^loading: bad pickle") as e:
        run_stages([Recorder("loading", fail=InputError("bad pickle")), later], ctx)
    assert e.value.exit_code == 3 and not later.ran
    with pytest.raises(StageError, match="^quantizing: ZeroDivisionError: boom"):
        run_stages([Recorder("quantizing", fail=ZeroDivisionError("boom"))], ctx)


def test_stage_list_order_and_names(ctx) -> None:
    names = [s.name for s in stages_for(ctx.config)]
    assert names == [
        "checking inputs",
        "training",
        "stripping training wrappers",
        "quantizing",
        "exporting onnx",
        "validating",
        "writing the report",
        "checking gates",
        "computing checksums",
    ]


def with_challenge_gates(ctx: BuildContext) -> config.ValidateConfig:
    """The demo's [validate] with the challenge-set gates at the issue's targets (90%, 0 points)."""
    return dataclasses.replace(
        ctx.config.validate, min_challenge_accuracy=0.90, max_challenge_baseline_deficit=0.0
    )


PASSING = {
    "size_ratio": 5.9,
    "speedup_p50": 6.5,
    "accuracy_drop_points": 0.0,
    "agreement": 1.0,
    "accuracy_quantized": 0.93,
    "p95_ms_quantized": 16.0,
    "size_ratio_onnx": 6.1,
    "speedup_p50_onnx": 14.0,
    "accuracy_drop_points_onnx": 0.3,
    "agreement_onnx": 0.997,
    "accuracy_onnx": 0.93,
    "p95_ms_onnx": 12.0,
    "challenge_accuracy_quantized": 0.92,
    "challenge_accuracy_onnx": 0.92,
    "challenge_baseline_deficit_points": -1.2,
}


BAD = {
    "size_ratio": 4.9,
    "speedup_p50": 3.9,
    "accuracy_drop_points": 1.1,
    "agreement": 0.98,
    "accuracy_quantized": 0.89,
    "p95_ms_quantized": 50.1,
    "size_ratio_onnx": 4.9,
    "speedup_p50_onnx": 3.9,
    "accuracy_drop_points_onnx": 1.1,
    "agreement_onnx": 0.98,
    "accuracy_onnx": 0.89,
    "p95_ms_onnx": 50.1,
    "challenge_accuracy_quantized": 0.89,
    "challenge_accuracy_onnx": 0.89,
    "challenge_baseline_deficit_points": 0.5,
}


@pytest.mark.parametrize("key", list(PASSING))
def test_each_gate_fails_alone(ctx, key) -> None:
    assert all(g["passed"] for g in gates(with_challenge_gates(ctx), PASSING))
    results = gates(with_challenge_gates(ctx), {**PASSING, key: BAD[key]})
    assert [g["key"] for g in results if not g["passed"]] == [key]
    ctx.results["validate"] = {"gates": results}
    with pytest.raises(GateFailed) as e:
        CheckGates().run(ctx)
    assert e.value.exit_code == 4
    assert f"1 of {len(results)} gates failed" in str(e.value)
    failed_rows = [line for line in e.value.table.splitlines() if "**FAIL**" in line]
    name = next(g["name"] for g in results if g["key"] == key)
    assert len(failed_rows) == 1 and name in failed_rows[0]


def test_all_gates_passing_does_not_raise(ctx) -> None:
    ctx.results["validate"] = {"gates": gates(with_challenge_gates(ctx), PASSING)}
    CheckGates().run(ctx)


def test_gates_of_a_variant_not_built_are_left_out(ctx) -> None:
    summary = {k: v for k, v in PASSING.items() if not k.endswith("_onnx")}
    keys = [g["key"] for g in gates(with_challenge_gates(ctx), summary)]
    assert keys and not any(k.endswith("_onnx") for k in keys)


def test_gate_boundaries_are_inclusive() -> None:
    assert Gate("x", "k", ">=", 5.0).passes(5.0)
    assert Gate("x", "k", "<=", 1.0).passes(1.0)


def test_challenge_gates_are_left_out_without_a_challenge_set(ctx) -> None:
    summary = {k: v for k, v in PASSING.items() if not k.startswith("challenge_")}
    keys = {g["key"] for g in gates(with_challenge_gates(ctx), summary)}
    assert keys == set(summary)
    assert {"challenge_accuracy_quantized", "challenge_baseline_deficit_points"} <= {
        g["key"] for g in gates(with_challenge_gates(ctx), PASSING)
    }


def test_challenge_gates_are_off_unless_set(ctx) -> None:
    unset = dataclasses.replace(
        ctx.config.validate, min_challenge_accuracy=None, max_challenge_baseline_deficit=None
    )
    keys = {g["key"] for g in gates(unset, PASSING)}
    assert keys and not any(k.startswith("challenge_") for k in keys)


def test_paired_counts_who_alone_is_right_and_whether_it_can_be_chance() -> None:
    from pipeline.evaluation import paired

    truth = list("aaaaaaaaaaaaaaaaaaaa")  # 20 texts
    model = list("aaaaaaaaabbbbbbbbbbb")  # right on 9
    base = list("aaaaaaaaaaaaaaaaaaab")  # right on 19
    got = paired(model, base, truth)
    assert (got["both_right"], got["model_only_right"], got["baseline_only_right"]) == (9, 0, 10)
    assert got["both_wrong"] == 1
    assert got["p_value"] == pytest.approx(2 / 2**10)  # 10 of 10 split texts one way
    # the demo's challenge set (fresh make demo at 6230a5f): 4 against 7 is chance
    four_seven = paired(list("aaaabbbbbbb"), list("bbbbaaaaaaa"), list("aaaaaaaaaaa"))
    assert four_seven["p_value"] == pytest.approx(0.549, abs=1e-3)
    assert paired(["a"], ["a"], ["b"])["p_value"] == 1.0  # nothing split
    with pytest.raises(ValueError):
        paired(["a"], ["a", "b"], ["a"])


def test_the_report_says_when_a_gap_to_the_baseline_can_be_chance() -> None:
    from pipeline.report import versus_baseline_line

    s = {"quantized_only_right": 4, "baseline_only_right": 7, "baseline_mcnemar_p": 0.549}
    line = versus_baseline_line("eval set", s, "")
    assert "4 answered right only by the quantized model, 7 only by the baseline" in line
    assert "p = 0.55" in line and "too small to tell from chance" in line
    s = {
        "challenge_quantized_only_right": 0,
        "challenge_baseline_only_right": 10,
        "challenge_baseline_mcnemar_p": 0.002,
    }
    assert "unlikely to be chance" in versus_baseline_line("challenge set", s, "challenge_")
