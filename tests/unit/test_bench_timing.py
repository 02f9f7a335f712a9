from __future__ import annotations

from benchmarks.timing import interleaved, summary


def test_interleaved_alternates_order_and_counts_every_call() -> None:
    calls: list[tuple[str, int]] = []
    fns = {"a": lambda x: calls.append(("a", x)), "b": lambda x: calls.append(("b", x))}
    out = interleaved(fns, [1, 2, 3], rounds=2, warmup=1)
    assert calls[:2] == [("a", 1), ("b", 1)]  # warm-up
    timed = calls[2:]
    assert timed[:6] == [("a", 1), ("b", 1), ("b", 2), ("a", 2), ("a", 3), ("b", 3)]
    assert timed[6:8] == [("b", 1), ("a", 1)]  # the next round starts the other way round
    assert [len(r) for r in out["a"]] == [3, 3] and len(out["b"]) == 2


def test_summary_is_median_of_round_p50s_with_spread() -> None:
    s = summary([[1.0, 2.0, 3.0], [10.0, 20.0, 30.0], [4.0, 5.0, 6.0]])
    assert s["p50_ms"] == 5.0 and s["p50_min_ms"] == 2.0 and s["p50_max_ms"] == 20.0
    assert s["rounds"] == 3 and s["calls_per_round"] == 3
