"""The ordered list of build stages."""

from __future__ import annotations

from pipeline.config import ReleaseConfig
from pipeline.stages.base import BuildContext, Stage, run_stages
from pipeline.stages.gates import CheckGates
from pipeline.stages.inputs import CheckInputs
from pipeline.stages.manifest import WriteManifest
from pipeline.stages.onnx import ExportOnnx
from pipeline.stages.quantize import Quantize
from pipeline.stages.report import Report
from pipeline.stages.strip import Strip
from pipeline.stages.train import TrainOrLoad
from pipeline.stages.validate import Validate

__all__ = ["BuildContext", "Stage", "run_stages", "stages_for"]


def stages_for(config: ReleaseConfig) -> list[Stage]:
    return [
        CheckInputs(),  # read and check the CSVs before anything expensive
        TrainOrLoad(
            loading=config.train.export_pkl is not None
        ),  # skipped when inputs are unchanged
        Strip(),  # unwrap WeightDropout / EmbeddingDropout: a float model fit for quantizing
        Quantize(),  # INT8 LSTM + Linear, 8-bit row-wise embedding -> export_quantized.pkl
        ExportOnnx(),  # tokenizer.json (gated: token ids == fastai's) + model_int8.onnx, no pickle
        Validate(),  # accuracy, agreement, latency (interleaved), size, fresh-process load
        Report(),  # report.json / report.md / plots, also for a failed build
        CheckGates(),  # exit 4 here when a gate fails: no manifest, nothing publishable
        WriteManifest(),  # blake3 of every file; manifest.json last
    ]
