"""Interleaved, repeated timing with medians and spreads: the only honest way on a noisy machine."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

from pipeline.measure import percentile


def interleaved(
    fns: dict[str, Callable[[Any], Any]], inputs: Sequence[Any], *, rounds: int, warmup: int
) -> dict[str, list[list[float]]]:
    """Milliseconds per call: for each round, every input runs through every variant in turn
    (the order alternating per input), so machine noise hits all variants alike."""
    names = list(fns)
    for n in names:
        for i in range(warmup):
            fns[n](inputs[i % len(inputs)])
    out: dict[str, list[list[float]]] = {n: [] for n in names}
    for r in range(rounds):
        per: dict[str, list[float]] = {n: [] for n in names}
        for i, x in enumerate(inputs):
            order = names if (i + r) % 2 == 0 else names[::-1]
            for n in order:
                t0 = time.perf_counter()
                fns[n](x)
                per[n].append((time.perf_counter() - t0) * 1000)
        for n in names:
            out[n].append(per[n])
    return out


def summary(rounds_ms: list[list[float]]) -> dict[str, float]:
    """Median over rounds of each round's p50 and p95, with the spread (min-max) of the p50s."""
    p50s = [percentile(r, 50) for r in rounds_ms]
    p95s = [percentile(r, 95) for r in rounds_ms]
    return {
        "p50_ms": statistics.median(p50s),
        "p95_ms": statistics.median(p95s),
        "p50_min_ms": min(p50s),
        "p50_max_ms": max(p50s),
        "rounds": len(rounds_ms),
        "calls_per_round": len(rounds_ms[0]),
    }


def repeat_seconds(fn: Callable[[], Any], repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out
