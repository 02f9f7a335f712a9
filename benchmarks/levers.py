"""Train one model variant of a config and score it: the experiments behind the levers table in docs/demo-model.md.

    python -m benchmarks.levers --name small --set emb_sz=200 --set n_hid=400 [--config release.toml]
        [--train-csv FILE] [--sets eval,dev] [--latency]
    python -m benchmarks.levers --name demo --from-build artifacts/build/1.0.0 --sets eval,dev,challenge

Trains through `pipeline.training.train_classifier` exactly as `release build` does (same config
keys, `--set KEY=VALUE` overriding `[train]`), then strips and quantizes the learner the build's
way and scores the original, the quantized variant and the TF-IDF baseline on each named set:
`eval` (the config's eval CSV), `dev` (benchmarks/data/dev.csv: outside-style queries used to pick
the demo's settings), `dev_typos` (the same with one typo per text, from `python -m benchmarks.typos`),
`dev_typos_any` (one edit of any kind, `--kind any`: reported, not used to choose),
`dev_case` (dev in Title Case, ALL CAPS and mixed, `--kind case`), `dev2` (209 more
outside-style queries by seven other writers, harder than dev, which the demo's settings had
saturated), `dev3` (223 queries by four writers each given a persona instead of an intent), `dev4` (224 by
four more persona writers) and, only for the final report, `challenge` (pipeline/data/challenge.csv, never used
to choose anything). `--latency` also times `learn.predict` of both variants
interleaved at 1 thread and reports the size ratio of the two exported pickles, to see whether the
quantization gates hold for a given network size. `--from-build DIR` scores a finished build's
`export.pkl`, `export_quantized.pkl` and onnx variant (when there is one) instead of
training; `--keep DIR` writes a trained run's two pickles there, so it can be rescored that way. One JSON line per run is
appended to benchmarks/levers.jsonl.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline import config as cfg
from pipeline.dataset import read_labelled_csv

ROOT = Path(__file__).resolve().parent.parent
SETS = {
    "dev": ROOT / "benchmarks" / "data" / "dev.csv",
    "dev_typos": ROOT / "benchmarks" / "data" / "dev_typos.csv",  # python -m benchmarks.typos
    "dev_typos_any": ROOT / "benchmarks" / "data" / "dev_typos_any.csv",  # ... --kind any
    "dev_case": ROOT / "benchmarks" / "data" / "dev_case.csv",  # ... --kind case
    "dev2": ROOT / "benchmarks" / "data" / "dev2.csv",
    "dev3": ROOT / "benchmarks" / "data" / "dev3.csv",
    "dev4": ROOT / "benchmarks" / "data" / "dev4.csv",
    "challenge": ROOT / "pipeline" / "data" / "challenge.csv",
}
log = logging.getLogger("benchmarks.levers")


def _override(train: cfg.TrainConfig, assignments: list[str]) -> cfg.TrainConfig:
    changes: dict[str, Any] = {}
    for a in assignments:
        key, _, raw = a.partition("=")
        current = getattr(train, key)
        kind = next((k.kind for k in cfg.spec.keys(cfg.TrainConfig) if k.name == key), "")
        if current is None and kind in ("int", "float"):
            changes[key] = int(raw) if kind == "int" else float(raw)
        elif isinstance(current, bool):
            changes[key] = raw.lower() in ("1", "true", "yes")
        elif isinstance(current, int):
            changes[key] = int(raw)
        elif isinstance(current, float):
            changes[key] = float(raw)
        else:
            changes[key] = raw
    return dataclasses.replace(train, **changes)


def score_sets(
    predict: dict[str, Callable[[list[str]], list[str]]],
    sets: dict[str, Any],
    train: Any,
    seed: int,
) -> dict[str, Any]:
    """Accuracy of each variant and of the TF-IDF baseline per set, and the quantized variant
    against the baseline text by text (`evaluation.paired`: who alone is right, McNemar p)."""
    from pipeline.evaluation import accuracy, paired, tfidf_baseline

    out: dict[str, Any] = {"accuracy": {}, "versus_baseline": {}}
    for name, data in sets.items():
        texts, truth = list(data.texts), list(data.labels)
        preds = {k: f(texts) for k, f in predict.items()}
        preds["baseline"] = tfidf_baseline(list(train.texts), list(train.labels), texts, seed)
        out["accuracy"][name] = {k: accuracy(v, truth) for k, v in preds.items()}
        out["versus_baseline"][name] = paired(preds["quantized"], preds["baseline"], truth)
    return out


def score_build(args: argparse.Namespace, c: Any, train: Any, sets: dict[str, Any]) -> None:
    from pipeline.client.onnx_model import OnnxClassifier
    from pipeline.evaluation import predict_all
    from pipeline.learner_file import load_exported
    from pipeline.manifest import ONNX_FILE, ORIGINAL_FILE, QUANTIZED_FILE, TOKENIZER_FILE

    d = args.from_build
    learners = {
        "original": load_exported(d / ORIGINAL_FILE),
        "quantized": load_exported(d / QUANTIZED_FILE),
    }
    onnx = (
        OnnxClassifier(d / ONNX_FILE, d / TOKENIZER_FILE, threads=1)
        if (d / ONNX_FILE).exists()
        else None
    )
    result: dict[str, Any] = {"name": args.name, "build": str(d)}
    predict = {k: (lambda texts, v=v: predict_all(v, texts).labels) for k, v in learners.items()}
    if onnx is not None:
        predict["onnx"] = lambda texts: [onnx.predict(t).label for t in texts]
    result |= score_sets(predict, sets, train, c.train.seed)
    with args.out.open("a", encoding="utf-8") as f:
        f.write(json.dumps(result) + "\n")
    print(json.dumps(result, indent=1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--config", type=Path, default=ROOT / "release.toml")
    ap.add_argument("--name", required=True)
    ap.add_argument("--set", dest="sets_", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--train-csv", type=Path)
    ap.add_argument("--sets", default="eval,dev")
    ap.add_argument("--latency", action="store_true")
    ap.add_argument("--from-build", type=Path, metavar="DIR")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "levers.jsonl")
    ap.add_argument(
        "--keep", type=Path, metavar="DIR", help="also export both variants there (to rescore)"
    )
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    from pipeline.evaluation import predict_all
    from pipeline.quantization import quantize, strip
    from pipeline.stages.quantize import export_learner
    from pipeline.training import train_classifier

    c = cfg.load(args.config)
    c = dataclasses.replace(c, train=_override(c.train, args.sets_))
    d = c.data
    train_csv = args.train_csv or d.train_csv
    train = read_labelled_csv(train_csv, d.text_column, d.label_column)
    sets = {}
    for name in args.sets.split(","):
        path = d.eval_csv if name == "eval" else SETS[name]
        sets[name] = read_labelled_csv(path, "text", "label", min_classes=1)

    if args.from_build:
        score_build(args, c, train, sets)
        return
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        learn = train_classifier(c, train, Path(tmp) / "work")
        train_s = time.perf_counter() - t0
        params = sum(p.numel() for p in learn.model.parameters())
        quantized = quantize(strip(learn), tuple(c.quantize.modules))
        result: dict[str, Any] = {
            "name": args.name,
            "train": {k: str(v) for k, v in dataclasses.asdict(c.train).items()},
            "train_csv": str(
                train_csv.relative_to(ROOT) if train_csv.is_relative_to(ROOT) else train_csv
            ),
            "train_rows": len(train),
            "train_seconds": round(train_s, 1),
            "params": params,
            "vocab": len(learn.dls.vocab[0]),
        }
        result |= score_sets(
            {
                "original": lambda texts: predict_all(learn, texts).labels,
                "quantized": lambda texts: predict_all(quantized, texts).labels,
            },
            sets,
            train,
            c.train.seed,
        )
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=True)
            export_learner(learn, args.keep / "export.pkl")
            export_learner(quantized, args.keep / "export_quantized.pkl")
        if args.latency:
            from pipeline.measure import interleaved_latency

            paths = {"original": Path(tmp) / "o.pkl", "quantized": Path(tmp) / "q.pkl"}
            export_learner(learn, paths["original"])
            export_learner(quantized, paths["quantized"])
            texts = list(sets[next(iter(sets))].texts)[:60]
            ms = interleaved_latency(
                {"original": learn, "quantized": quantized}, texts, threads=1, warmup=5
            )
            p50 = {k: statistics.median(v) for k, v in ms.items()}
            sizes = {k: p.stat().st_size for k, p in paths.items()}
            result["latency_p50_ms"] = p50
            result["speedup"] = p50["original"] / p50["quantized"]
            result["size_bytes"] = sizes
            result["size_ratio"] = sizes["original"] / sizes["quantized"]
    with args.out.open("a", encoding="utf-8") as f:
        f.write(json.dumps(result) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
