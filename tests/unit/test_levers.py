"""benchmarks.levers scores every set the same way for a trained run and a finished build."""

from __future__ import annotations

from types import SimpleNamespace

from benchmarks.levers import score_sets


def test_score_sets_counts_what_only_the_model_or_only_the_baseline_got_right() -> None:
    train = SimpleNamespace(
        texts=["rest api token", "odata endpoint call", "error on save", "crash when posting"] * 5,
        labels=["api", "api", "bug", "bug"] * 5,
    )
    held_out = SimpleNamespace(
        texts=["api token expired", "save error again", "odd one", "another"],
        labels=["api", "bug", "api", "bug"],
    )
    # the "model" answers "api" to everything: right on texts 0 and 2, wrong on 1 and 3
    scored = score_sets(
        {"quantized": lambda texts: ["api"] * len(texts)}, {"dev": held_out}, train, seed=0
    )
    acc = scored["accuracy"]["dev"]
    assert acc["quantized"] == 0.5
    pair = scored["versus_baseline"]["dev"]
    # the baseline answers api, bug, bug, bug: right on texts 0, 1 and 3
    assert acc["baseline"] == 0.75
    assert (pair["both_right"], pair["model_only_right"]) == (1, 1)  # text 0; text 2
    assert (pair["baseline_only_right"], pair["both_wrong"]) == (2, 0)  # texts 1 and 3
    assert pair["p_value"] == 1.0  # 1 against 2 is no evidence either way
