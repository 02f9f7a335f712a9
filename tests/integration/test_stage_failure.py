"""A stage that fails after training: the message names the stage and its input, and the
trained learner stays, so the next build starts after training."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline import config as cfg
from pipeline import evaluation
from pipeline.build import build
from pipeline.checksums import blake3_file
from pipeline.stages import BuildContext
from pipeline.stages.base import StageError
from pipeline.stages.train import TrainOrLoad
from tests import zoo
from tests.helpers import small_build_toml

pytestmark = pytest.mark.slow

CONFIG = small_build_toml(
    "resume",
    train="epochs = 1\nbatch_size = 16\n",
    # one epoch on 150 rows leaves the model at chance, which would stop the build after training
    validate="golden_queries = 3\nmin_size_ratio = 0.0\nmin_speedup = 0.0\nbeat_majority = false\n",
)


def test_a_failure_after_training_keeps_the_learner_and_a_rerun_skips_training(
    tmp_path: Path, monkeypatch
) -> None:
    """Trains 150 rows of a 16/24 network (seconds): the failure is the one users hit, the
    quantized learner refusing a batch of long texts, injected at the same call."""
    train, eval_ = zoo.dataset()
    train.to_csv(tmp_path / "train.csv", index=False)
    eval_.to_csv(tmp_path / "eval.csv", index=False)
    (tmp_path / "release.toml").write_text(CONFIG)
    config = cfg.load(tmp_path / "release.toml")
    real = evaluation.predict_all

    def refusing_quantized(learn, texts, batch_size=64):  # noqa: ANN001, ANN202
        if any("quantized" in type(m).__module__ for m in learn.model.modules()):
            raise RuntimeError("Expect weight, indices, and offsets to be contiguous.")
        return real(learn, texts, batch_size)

    monkeypatch.setattr(evaluation, "predict_all", refusing_quantized)
    with pytest.raises(StageError) as e:
        build(config)
    message = str(e.value)
    assert message.startswith(
        f"validating: predicting {tmp_path / 'eval.csv'} ({len(eval_)} texts) with the quantized "
        "variant: RuntimeError: Expect weight, indices, and offsets to be contiguous.; the "
        f"trained learner is kept ({config.build_dir / 'export.pkl'}): run `release build` again"
    ), message
    kept = blake3_file(config.build_dir / "export.pkl")
    # the next build starts after training: its inputs are unchanged
    ctx = BuildContext(config=cfg.load(tmp_path / "release.toml"), build_dir=config.build_dir)
    reason = TrainOrLoad().skip_reason(ctx)
    assert reason and reason.startswith("inputs unchanged since the last build"), reason
    assert blake3_file(config.build_dir / "export.pkl") == kept
