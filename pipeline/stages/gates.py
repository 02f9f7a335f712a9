"""The gates: the table [validate] defines (`gates_for`), each gate against a build's measured
summary (`gates`), what a user can do when one fails (`advice_for`, `gate_advice_for`), and the
stage that stops the build (exit 4) when any failed; nothing after that stage runs.

`validate` measures and calls `gates` (the one place the gate logic lives; the tests call it);
`CheckGates` reads its results (`ctx.results["validate"]["gates"]`, what report.json holds) after
the report is written, so a failed build still leaves its report to read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipeline import evaluation as ev
from pipeline.config import QUANTIZABLE_MODULES, ReleaseConfig, ValidateConfig
from pipeline.errors import GateFailed
from pipeline.report import gate_advice, gates_table
from pipeline.stages.base import BuildContext


@dataclass(frozen=True)
class Gate:
    name: str
    key: str  # where the measured value lives in results["validate"]["summary"]
    op: str  # ">=", "<=" or ">"
    threshold: float
    unit: str = ""
    advice: str = ""  # what a user can do when it fails (shown in the report's verdict)

    def passes(self, measured: float) -> bool:
        if self.op == ">":
            return measured > self.threshold
        return measured >= self.threshold if self.op == ">=" else measured <= self.threshold


# --- advice ------------------------------------------------------------------------------------

_CHALLENGE_ADVICE = (
    "the model keys on how its training rows are phrased: add training rows written the "
    "way other people ask (terse noun phrases, imperatives, long questions, typos, other "
    "words), never rows of the challenge set itself"
)

# the sentence that leads an accuracy gate's advice, by the gate's key
_LEADS = {
    "lead_over_majority_points": "the model does no better than always answering the most "
    "frequent eval class: ",
    "baseline_deficit_points": "a TF-IDF + logistic regression model trained on the same "
    "rows is clearly better: ",
}


def _accuracy_options(base: str, c: ReleaseConfig | None) -> list[str]:
    """More data, epochs, a language model or pretrained weights, a smaller network, a looser
    threshold: what can lift accuracy (`base`: the gate's key without its variant suffix)."""
    t = c.train if c else None
    v = c.validate if c else None
    opts = ["more (and more varied) training rows per class"]
    if base == "lead_over_majority_points":
        opts.append("check the labels, add rows for the rare classes")
    opts.append(f"more epochs (train.epochs{f' = {t.epochs} now' if t else ''})")
    if t is None or t.export_pkl is None:
        if t is None or t.lm_epochs == 0:
            opts.append("train.lm_epochs (ULMFiT: a language model on your texts first)")
        else:
            opts.append(f"more train.lm_epochs ({t.lm_epochs} now)")
        if t is None or not t.pretrained:
            opts.append("pretrained weights (train.pretrained)")
    if base == "baseline_deficit_points" and (t is None or t.emb_sz * t.n_hid > 200 * 400):
        now = f", {t.emb_sz}/{t.n_hid} now" if t else ""
        opts.append(f"a smaller network from scratch (train.emb_sz / train.n_hid{now})")
    threshold = {
        "lead_over_majority_points": None,
        "baseline_deficit_points": "raise validate.max_baseline_deficit"
        + (f" ({v.max_baseline_deficit:g} now)" if v else "")
        + " to ship it knowingly",
        "accuracy": "lower validate.min_accuracy if the task allows",
    }[base]
    if threshold:
        opts.append(threshold)
    return opts


def _size_options(c: ReleaseConfig | None) -> list[str]:
    opts = []
    if c is None:
        opts.append("keep all of quantize.modules")
    elif left := sorted(set(QUANTIZABLE_MODULES) - set(c.quantize.modules)):
        opts.append(f"quantize every module (quantize.modules leaves out {', '.join(left)})")
    opts.append(
        "a network with few parameters shrinks less, even alone (200/400/2: about 5x; "
        "benchmarks/gate_ratios.jsonl): lower validate.min_size_ratio"
        + (f" ({c.validate.min_size_ratio:g} now)" if c else "")
        + " for it knowingly"
    )
    return opts


def _speed_options(c: ReleaseConfig | None) -> list[str]:
    v = c.validate if c else None
    quiet = "timings vary: rebuild on a quiet machine"
    return [
        quiet if v is not None and v.threads == 1 else quiet + " with validate.threads = 1",
        "a small network gains less from INT8, even alone (200/400/2: about 2.5x; "
        "benchmarks/gate_ratios.jsonl): lower validate.min_speedup"
        + (f" ({v.min_speedup:g} now)" if v else "")
        + " for it knowingly",
    ]


def _agreement_options(c: ReleaseConfig | None) -> list[str]:
    opts = []
    modules = set(c.quantize.modules) if c else set()
    kept = [m for m in ("embedding", "lstm") if c is None or m in modules]
    if kept:
        opts.append(
            f"quantization changed answers: leave {' (then '.join(map(repr, kept))}"
            + (")" if len(kept) > 1 else "")
            + " out of quantize.modules and rebuild"
        )
    opts.append("raise the threshold if the eval set is small")
    return opts


def _latency_options(c: ReleaseConfig | None) -> list[str]:
    t = c.train if c else None
    now = f", {t.emb_sz}/{t.n_hid}/{t.n_layers} now" if t else ""
    return [
        f"a smaller model (train.emb_sz, train.n_hid, train.n_layers{now})",
        "a higher validate.max_p95_ms",
    ]


def advice_for(key: str, c: ReleaseConfig | None = None) -> str:
    """What a user can do when the gate on `key` fails, from the settings of `c`: an option
    already in place is left out or given with its current value, never recommended as if it
    were not (None: every option, generically)."""
    if key.startswith("challenge_"):
        return _CHALLENGE_ADVICE
    # the size and speed gates read the network alone (`network_size_ratio`...)
    base = key.removeprefix("network_").removesuffix("_onnx").removesuffix("_quantized")
    opts: list[str] = []
    if base in ("lead_over_majority_points", "baseline_deficit_points", "accuracy"):
        opts = _accuracy_options(base, c)
    elif base == "size_ratio":
        opts = _size_options(c)
    elif base == "speedup_p50":
        opts = _speed_options(c)
    elif base in ("accuracy_drop_points", "agreement"):
        opts = _agreement_options(c)
    elif base == "p95_ms":
        opts = _latency_options(c)
    return _LEADS.get(base, "") + "; ".join(opts)


_SMALLER = advice_for("size_ratio")
_FASTER = advice_for("speedup_p50")
_CLOSER = advice_for("agreement")
_BETTER = advice_for("accuracy_quantized")
_HOLD_UP = advice_for("challenge_accuracy_quantized")
_QUICKER = advice_for("p95_ms_quantized")


# --- the table ---------------------------------------------------------------------------------


def _model_gates(v: ValidateConfig) -> list[Gate]:
    """The original model against the majority class (when `beat_majority`) and the baseline."""
    out = [
        Gate(
            "lead over the majority-class baseline",
            "lead_over_majority_points",
            ">",
            0.0,
            " points",
            advice_for("lead_over_majority_points"),
        ),
        Gate(
            "points behind the TF-IDF baseline",
            "baseline_deficit_points",
            "<=",
            v.max_baseline_deficit,
            " points",
            advice_for("baseline_deficit_points"),
        ),
    ]
    return out if v.beat_majority else out[1:]


def _quantized_gates(v: ValidateConfig) -> list[Gate]:
    # Size and speed are those of the network alone, what quantization acts on (`network_bytes`,
    # `network_latencies`): the rest of a pickle (vocabulary, data pipeline) and of a
    # learn.predict call (tokenizing, batching) is the same in every variant and, for a small
    # network, most of it (benchmarks/gate_ratios.jsonl). The report shows both.
    return [
        Gate(
            "network size ratio (original / quantized)",
            "network_size_ratio",
            ">=",
            v.min_size_ratio,
            "x",
            _SMALLER,
        ),
        Gate(
            "network forward p50 speedup",
            "network_speedup_p50",
            ">=",
            v.min_speedup,
            "x",
            _FASTER,
        ),
        Gate(
            "accuracy drop", "accuracy_drop_points", "<=", v.max_accuracy_drop, " points", _CLOSER
        ),
        Gate("top-1 agreement", "agreement", ">=", v.min_agreement, "", _CLOSER),
        Gate("quantized accuracy", "accuracy_quantized", ">=", v.min_accuracy or 0.0, "", _BETTER),
        Gate(
            "quantized predict p95", "p95_ms_quantized", "<=", v.max_p95_ms or 0.0, " ms", _QUICKER
        ),
    ]


def _onnx_gates(v: ValidateConfig) -> list[Gate]:
    # the onnx variant is held to the quantized variant's thresholds
    return [
        Gate(
            "network size ratio (original / onnx)",
            "network_size_ratio_onnx",
            ">=",
            v.min_size_ratio,
            "x",
            _SMALLER,
        ),
        Gate(
            "onnx network forward p50 speedup",
            "network_speedup_p50_onnx",
            ">=",
            v.min_speedup,
            "x",
            _FASTER,
        ),
        Gate(
            "onnx accuracy drop",
            "accuracy_drop_points_onnx",
            "<=",
            v.max_accuracy_drop,
            " points",
            _CLOSER,
        ),
        Gate("onnx top-1 agreement", "agreement_onnx", ">=", v.min_agreement, "", _CLOSER),
        Gate("onnx accuracy", "accuracy_onnx", ">=", v.min_accuracy or 0.0, "", _BETTER),
        Gate("onnx predict p95", "p95_ms_onnx", "<=", v.max_p95_ms or 0.0, " ms", _QUICKER),
    ]


def _challenge_gates(v: ValidateConfig) -> list[Gate]:
    # [data] challenge_csv (queries phrased unlike the training data): gates only when set
    challenge = []
    if v.min_challenge_accuracy is not None:
        challenge += [
            Gate(
                f"challenge-set accuracy ({name})",
                f"challenge_accuracy_{name}",
                ">=",
                v.min_challenge_accuracy,
                "",
                _HOLD_UP,
            )
            for name in ("quantized", "onnx")
        ]
    if v.max_challenge_baseline_deficit is not None:
        challenge.append(
            Gate(
                "challenge set: points the quantized model trails the TF-IDF baseline",
                "challenge_baseline_deficit_points",
                "<=",
                v.max_challenge_baseline_deficit,
                " points",
                _HOLD_UP,
            )
        )
    return challenge


def gates_for(v: ValidateConfig) -> list[Gate]:
    """Every gate [validate] defines, whether or not this build can measure it."""
    # absolute accuracy and latency depend on the task and the machine: gates only when set
    unset = {
        *(("accuracy_quantized", "accuracy_onnx") if v.min_accuracy is None else ()),
        *(("p95_ms_quantized", "p95_ms_onnx") if v.max_p95_ms is None else ()),
    }
    variants = [g for g in _quantized_gates(v) + _onnx_gates(v) if g.key not in unset]
    return _model_gates(v) + variants + _challenge_gates(v)


def gates(v: ValidateConfig, summary: dict[str, Any]) -> list[dict[str, Any]]:
    """Each gate against the measured summary: name, key, op, threshold, unit, advice, measured,
    passed.

    A gate whose value this build did not measure (no onnx variant; no train CSV, so no TF-IDF
    baseline) is left out; the report says which and why.
    """
    out = []
    for g in gates_for(v):
        if summary.get(g.key) is None:
            continue
        measured = summary[g.key]
        out.append({**g.__dict__, "measured": measured, "passed": g.passes(measured)})
    return out


# --- advice for this build -----------------------------------------------------------------

# accuracy gates whose failure a model that did not train explains
_ACCURACY_KEYS = (
    "lead_over_majority_points",
    "baseline_deficit_points",
    "accuracy_quantized",
    "accuracy_onnx",
    "challenge_accuracy_quantized",
    "challenge_accuracy_onnx",
    "challenge_baseline_deficit_points",
)


def did_not_train_message(s: dict[str, Any], c: ReleaseConfig | None = None) -> str:
    """The sentence a build says when the model learnt nothing (`s`: the summary with
    `training_verdict`'s keys), with what to change."""
    return ev.did_not_train_message(
        s["accuracy_original"],
        s["eval_loss_original"],
        s["chance_loss"],
        s["chance_accuracy"],
        "eval",
        ev.untrained_advice(c.train if c else None),
    )


def gate_advice_for(
    gate: dict[str, Any],
    c: ReleaseConfig,
    s: dict[str, Any],
    training: dict[str, Any] | None = None,
) -> str:
    """A gate's advice for this build: from its settings, led by "the model did not train" when
    an accuracy gate fails because it learnt nothing (`s`: the summary), and by the time budget
    when it stopped training early (`training`: how training ran, `TrainOrLoad`'s facts)."""
    advice = advice_for(gate["key"], c)
    if gate["key"] not in _ACCURACY_KEYS or gate["passed"]:
        return advice
    if (training or {}).get("stopped"):
        advice = (
            f"train.time_budget ({c.train.time_budget}) stopped training after "
            f"{training['epochs_run']} of {c.train.epochs} epochs ({training['stopped']}): a "
            "larger budget, or a quieter machine (`release init --time-budget` measured it "
            f"faster). Otherwise: {advice}"
        )
    if s.get("did_not_train"):
        return f"{did_not_train_message(s, c)}. Otherwise: {advice}"
    return advice


class CheckGates:
    name = "checking gates"

    def skip_reason(self, ctx: BuildContext) -> str | None:
        return None

    def run(self, ctx: BuildContext) -> None:
        gates = ctx.results["validate"]["gates"]
        failed = [g for g in gates if not g["passed"]]
        if failed:
            raise GateFailed(
                f"{len(failed)} of {len(gates)} gates failed; the build is not releasable "
                f"(report: {ctx.build_dir / 'report.md'}; thresholds: [validate] in {ctx.config.path.name})",
                gates_table(gates) + "\n\nWhat you can do:\n" + gate_advice(gates),
            )
