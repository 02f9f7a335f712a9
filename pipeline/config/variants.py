"""[quantize], [onnx] and [validate]: the variants a build makes and the gates they pass."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pipeline.config.spec import Check, OneOf, Range, SubsetOf, setting

QUANTIZABLE_MODULES = ("lstm", "linear", "embedding")
QUANTIZED_ENGINES = ("auto", "x86", "fbgemm", "qnnpack", "onednn")
_AT_LEAST_0 = Range(0)
_SHARE = Range(0, 1)
_POINTS = Range(0, 100)


def _off_unless_set(
    doc: str, example: float, check: Check, *, more: str = "", demo: str = ""
) -> Any:
    """A gate that is off (None) unless release.toml sets it; its docs say so, and what the
    demo's release.toml sets (`demo`)."""
    off = f"off unless set (the demo sets {demo})" if demo else "off unless set"
    return setting(
        None, doc=doc, more=f"{more}; {off}" if more else off, example=example, check=check
    )


@dataclass(frozen=True)
class QuantizeConfig:
    """Dynamic INT8 quantization of the trained learner."""

    modules: tuple[str, ...] = setting(
        QUANTIZABLE_MODULES,
        doc="which module kinds become INT8",
        check=SubsetOf(QUANTIZABLE_MODULES),
    )
    engine: str = setting("auto", doc="torch quantized engine", check=OneOf(QUANTIZED_ENGINES))


@dataclass(frozen=True)
class ValidateConfig:
    """The measurements of every variant and the gates a release must pass (exit 4 otherwise)."""

    threads: int = setting(
        1, doc="torch threads for the latency and load measurements", check=Range(1, 1024)
    )
    warmup: int = setting(5, doc="untimed `predict` calls per variant first", check=_AT_LEAST_0)
    latency_queries: int = setting(60, doc="eval queries timed per variant", check=Range(2))
    golden_queries: int = setting(
        14,
        doc="eval queries in the manifest for smoke tests",
        more="Both variants right, spread over the classes",
        check=Range(1, 1000),
    )
    min_size_ratio: float = setting(
        5.0,
        doc="gate: the network's size, original / quantized (and / onnx)",
        more="The network alone: the bytes of the pickled `learn.model` (the onnx graph for the "
        "onnx variant), what quantization acts on; the vocabulary and data pipeline in a pickle "
        "weigh the same in every variant and, for a small network, are most of the file (the "
        "report shows the file sizes too). 5.0 fits the demo's 400/1152/3 network; "
        "`release init --time-budget` writes 4.0 for 200/400/2 (measured about 5x, "
        "`benchmarks/gate_ratios.jsonl`)",
        check=_AT_LEAST_0,
    )
    min_speedup: float = setting(
        4.0,
        doc="gate: the network's forward pass, p50 original / p50 quantized (and onnx)",
        more="One forward pass at batch 1 on texts tokenized beforehand, variants interleaved: "
        "what quantization makes faster, without `learn.predict`'s tokenizing and batching, "
        "which cost the same in every variant (the report shows `learn.predict`'s latency too; "
        "a learner whose network cannot be timed alone is gated on it). 4.0 fits 400/1152/3; "
        "`release init --time-budget` writes 1.5 for 200/400/2 (measured 2.3-2.7x)",
        check=_AT_LEAST_0,
    )
    max_accuracy_drop: float = setting(
        1.0, doc="gate: percentage points the quantized variant may lose", check=_POINTS
    )
    min_agreement: float = setting(
        0.99, doc="gate: share of eval texts where both variants give the same label", check=_SHARE
    )
    min_accuracy: float | None = _off_unless_set(
        "gate: quantized (and onnx) accuracy on the eval set", 0.9, _SHARE, demo="0.90"
    )
    max_p95_ms: float | None = _off_unless_set(
        "gate: quantized (and onnx) p95 latency in ms on the build machine",
        50.0,
        Range(0.001),
        more="Measured on `learn.predict` and onnx `predict()`",
        demo="50.0",
    )
    beat_majority: bool = setting(
        True,
        doc="gate: the original model must beat always answering the most frequent class",
    )
    max_baseline_deficit: float = setting(
        5.0,
        doc="gate: points the model may trail a TF-IDF + logistic-regression baseline",
        more="The original model, on the eval set (needs `data.train_csv`)",
        check=_POINTS,
    )
    min_challenge_accuracy: float | None = _off_unless_set(
        "gate (with `data.challenge_csv`): quantized and onnx accuracy on it",
        0.9,
        _SHARE,
        demo="0.90",
    )
    max_challenge_baseline_deficit: float | None = _off_unless_set(
        "gate (with `data.challenge_csv`): points the model may trail the baseline on it",
        5.0,
        Range(-100, 100),
        more="The quantized model against the TF-IDF baseline (0: it must not trail)",
    )


@dataclass(frozen=True)
class OnnxConfig:
    """The pickle-free onnx variant."""

    enabled: Literal["auto"] | bool = setting(
        "auto",
        doc='"auto": build it when the learner is supported, else skip with the reason',
        more="`true`: an unsupported learner is an error; `false`: never build it. A skip's "
        "reason goes to the log, the report and the manifest",
    )
