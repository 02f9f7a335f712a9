"""What quantization does to networks of each size: the size and speed the gates read.

    python -m benchmarks.gate_ratios [--train-csv FILE --text-column C --label-column L]
        [--shape 400/1152/3 --shape 200/400/2 ...] [--queries 60] [--name NAME]

For each AWD_LSTM shape, a classifier is built on the rows (tokenized as the build does; weights
as initialized: sizes and speed do not depend on training), stripped, quantized and exported to
onnx the build's way, and measured as `release build` measures it: the two pickles' file sizes and
`learn.predict` p50 (what the gates read before), and the network alone, what quantization acts
on: the pickled `learn.model` and the onnx graph, and one forward pass on a pre-tokenized text
(all at 1 thread, variants interleaved). One JSON line per shape is appended to
benchmarks/gate_ratios.jsonl, with the load average.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks" / "gate_ratios.jsonl"


def measure(
    train_csv: Path, text: str, label: str, shape: tuple[int, int, int], queries: int
) -> dict[str, Any]:
    import pandas as pd
    import torch
    from fastai.torch_core import set_seed

    from pipeline.client.onnx_model import OnnxClassifier
    from pipeline.config import TrainConfig
    from pipeline.dataset import read_labelled_csv
    from pipeline.measure import interleaved_latency, percentile
    from pipeline.onnx_export import export_fp32, quantize_int8, tokenizer_spec
    from pipeline.quantization import quantize, strip
    from pipeline.stages.quantize import export_learner
    from pipeline.stages.size_speed import onnx_forward, pickled_bytes, torch_forward
    from pipeline.training import _classifier_dls, _classifier_learner, _tokenizer_options

    data = read_labelled_csv(train_csv, text, label)
    t = TrainConfig()
    t = dataclasses.replace(t, emb_sz=shape[0], n_hid=shape[1], n_layers=shape[2], batch_size=64)
    torch.set_num_threads(1)
    set_seed(t.seed, reproducible=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        df = pd.DataFrame({"text": list(data.texts), "label": list(data.labels)})
        dls = _classifier_dls(t, df, data.classes, None, _tokenizer_options(t, work), "cpu")
        learn = _classifier_learner(t, dls, work)
        learn.model.eval()
        learn.path = Path(".")
        stripped = strip(learn)
        quantized = quantize(stripped, ("lstm", "linear", "embedding"))
        files = {"original": work / "o.pkl", "quantized": work / "q.pkl"}
        export_learner(learn, files["original"])
        export_learner(quantized, files["quantized"])
        (work / "tokenizer.json").write_text(json.dumps(tokenizer_spec(learn)))
        int8 = quantize_int8(export_fp32(stripped, work / "fp32.onnx"), work / "model_int8.onnx")
        onnx = OnnxClassifier(int8, work / "tokenizer.json", threads=1)
        texts = list(data.texts)[:: max(1, len(data) // queries)][:queries]
        sizes = {k: p.stat().st_size for k, p in files.items()}
        sizes["onnx"] = int8.stat().st_size + (work / "tokenizer.json").stat().st_size
        networks = {
            "original": pickled_bytes(learn.model),
            "quantized": pickled_bytes(quantized.model),
            "onnx": int8.stat().st_size,
        }
        predict = interleaved_latency(
            {"original": learn, "quantized": quantized, "onnx": onnx.predict},
            texts,
            threads=1,
            warmup=5,
        )
        forward = interleaved_latency(
            {
                "original": torch_forward(learn, texts),
                "quantized": torch_forward(quantized, texts),
                "onnx": onnx_forward(onnx, texts),
            },
            texts,
            threads=1,
            warmup=5,
        )
    p50 = {k: percentile(v, 50) for k, v in predict.items()}
    f50 = {k: percentile(v, 50) for k, v in forward.items()}
    return {
        "shape": "/".join(map(str, shape)),
        "train_csv": str(train_csv),
        "classes": len(data.classes),
        "vocab": len(dls.vocab[0]),
        "params": sum(p.numel() for p in learn.model.parameters()),
        "file_bytes": sizes,
        "file_ratio": {k: sizes["original"] / sizes[k] for k in ("quantized", "onnx")},
        "network_bytes": networks,
        "network_ratio": {k: networks["original"] / networks[k] for k in ("quantized", "onnx")},
        "predict_p50_ms": p50,
        "predict_speedup": {k: p50["original"] / p50[k] for k in ("quantized", "onnx")},
        "forward_p50_ms": f50,
        "forward_speedup": {k: f50["original"] / f50[k] for k in ("quantized", "onnx")},
        "queries": len(texts),
        "load": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--train-csv", type=Path, default=ROOT / "pipeline" / "data" / "train.csv")
    ap.add_argument("--text-column", default="text")
    ap.add_argument("--label-column", default="label")
    ap.add_argument("--shape", action="append", default=[])
    ap.add_argument("--queries", type=int, default=60)
    ap.add_argument("--name", default="")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    for s in args.shape or ["400/1152/3", "200/400/2", "100/256/1"]:
        a, b, c = (int(x) for x in s.split("/"))
        row = {"name": args.name} | measure(
            args.train_csv, args.text_column, args.label_column, (a, b, c), args.queries
        )
        with OUT.open("a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
        print(json.dumps(row))


if __name__ == "__main__":
    main()
