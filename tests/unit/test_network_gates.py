"""The size and speed gates read the network alone (what quantization acts on), so a small
network's pickle, mostly vocabulary and data pipeline, does not fail them; init writes the
thresholds of the network it chose."""

from __future__ import annotations

import dataclasses

from pipeline import config as cfg
from pipeline.stages.gates import gates
from pipeline.stages.validate import summarize
from pipeline.time_budget import CANDIDATES
from tests.conftest import FIXTURES

# The 200/400/2 network on its intent data: the files 2.79x apart, learn.predict 1.72x
# faster; the network alone (benchmarks/gate_ratios.jsonl) about 5x smaller, 2.7x faster.
SMALL_NETWORK = {
    "size_ratio": 2.79,
    "speedup_p50": 1.72,
    "network_size_ratio": 5.0,
    "network_speedup_p50": 2.7,
    "network_size_ratio_onnx": 5.1,
    "network_speedup_p50_onnx": 9.0,
}


def _validate(**changes: float) -> cfg.ValidateConfig:
    return dataclasses.replace(cfg.load(FIXTURES / "tiny.toml").validate, **changes)


def _size_speed(results: list[dict]) -> dict[str, bool]:
    return {g["key"]: g["passed"] for g in results if "size" in g["key"] or "speed" in g["key"]}


def test_size_and_speed_gates_read_the_network_not_the_file() -> None:
    results = _size_speed(gates(_validate(min_size_ratio=5.0, min_speedup=2.5), SMALL_NETWORK))
    assert results == {
        "network_size_ratio": True,
        "network_speedup_p50": True,
        "network_size_ratio_onnx": True,
        "network_speedup_p50_onnx": True,
    }


def test_the_demo_thresholds_still_fail_a_small_network_on_speed() -> None:
    results = _size_speed(gates(_validate(min_size_ratio=5.0, min_speedup=4.0), SMALL_NETWORK))
    assert results["network_speedup_p50"] is False and results["network_size_ratio"] is True


def test_the_thresholds_init_writes_pass_the_network_it_chose() -> None:
    small = next(n for n in CANDIDATES if n.shape == "200/400/2")
    v = _validate(min_size_ratio=small.min_size_ratio, min_speedup=small.min_speedup)
    assert all(_size_speed(gates(v, SMALL_NETWORK)).values())
    big = next(n for n in CANDIDATES if n.shape == "400/1152/3")
    assert (big.min_size_ratio, big.min_speedup) == (5.0, 4.0)  # the defaults: the demo's network


def test_summary_holds_the_network_measures() -> None:
    variants = {name: {"accuracy": 0.9} for name in ("original", "quantized", "onnx")}
    comparisons = {
        n: {"agreement": 1.0, "mean_prob_diff": 0.0, "max_prob_diff": 0.0}
        for n in ("quantized", "onnx")
    }
    sizes = {"original": 12_000_000, "quantized": 4_300_000, "onnx": 3_000_000}
    latency = {
        n: {"p50_ms": ms, "p95_ms": ms}
        for n, ms in (("original", 17.0), ("quantized", 10.0), ("onnx", 2.0))
    }
    loads = {n: {"load_seconds": 1.0, "peak_rss_mb": 100.0} for n in sizes}
    networks = {"original": 10_000_000, "quantized": 2_000_000, "onnx": 1_900_000}
    network_latency = {
        n: {"p50_ms": ms} for n, ms in (("original", 5.4), ("quantized", 2.0), ("onnx", 0.6))
    }
    s = summarize(
        variants, comparisons, sizes, latency, loads, None, None, None, networks, network_latency
    )
    assert round(s["size_ratio"], 2) == 2.79 and round(s["speedup_p50"], 2) == 1.7
    assert s["network_size_ratio"] == 5.0 and round(s["network_speedup_p50"], 2) == 2.7
    assert (
        round(s["network_size_ratio_onnx"], 2) == 5.26
        and round(s["network_speedup_p50_onnx"], 2) == 9.0
    )
    assert s["network_bytes_original"] == 10_000_000 and s["network_p50_ms_original"] == 5.4
