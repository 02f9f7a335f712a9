"""Measure the release chain against its baselines, side by side, and write results.md + results.json.

    python -m benchmarks.run [--config release.toml] [--skip-build] [--rows size,latency,...]

Each comparison runs in this one process tree on this one machine, interleaved and repeated;
medians and spreads are reported. Rows: size, latency, accuracy, checksum, start, concurrent,
fleet, scale, batch and rollout (benchmarks/fleet.py, also `python -m benchmarks.fleet`), build.
What each row measures and the last run: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.timing import interleaved, repeat_seconds, summary
from pipeline import config as cfg
from pipeline.manifest import ORIGINAL_FILE, QUANTIZED_FILE

log = logging.getLogger("benchmarks")
ROOT = Path(__file__).resolve().parent.parent
ALL_ROWS = (
    "build",
    "size",
    "latency",
    "accuracy",
    "checksum",
    "start",
    "concurrent",
    "fleet",
    "scale",
    "batch",
    "rollout",
)


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch

    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "cores": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "quantized_engine": torch.backends.quantized.engine,
    }


# --- the variants --------------------------------------------------------------------------


class Variants:
    """original (as trained), naive (quantize_dynamic on Linear+LSTM only), ours (the release's)."""

    def __init__(self, build_dir: Path):
        from fastai.learner import load_learner

        from pipeline.quantization import naive_quantize, select_engine

        select_engine("auto")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.original = load_learner(build_dir / ORIGINAL_FILE)
            self.ours = load_learner(build_dir / QUANTIZED_FILE)
            self.naive = naive_quantize(self.original)
        self.build_dir = build_dir
        self.learners = {"original": self.original, "naive": self.naive, "ours": self.ours}


def export_size(learn: Any) -> int:
    from pipeline.stages.quantize import export_learner

    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "x.pkl"
        export_learner(learn, p)
        return p.stat().st_size


def row_size(v: Variants) -> dict[str, Any]:
    sizes = {
        "original": (v.build_dir / ORIGINAL_FILE).stat().st_size,
        "naive": export_size(v.naive),
        "ours": (v.build_dir / QUANTIZED_FILE).stat().st_size,
    }
    return {
        "bytes": sizes,
        "ratio_vs_original": {k: sizes["original"] / s for k, s in sizes.items()},
    }


def fast_predict_fn(learn: Any):  # noqa: ANN201
    """The client's fast predict() on a learner, if this version of the client has one."""
    try:
        from pipeline.client import predict as client_predict  # type: ignore[attr-defined]
    except ImportError:
        return None
    return lambda text: client_predict(learn, text)


def row_latency(v: Variants, texts: list[str], rounds: int) -> dict[str, Any]:
    import torch

    out: dict[str, Any] = {}
    for threads in sorted({1, os.cpu_count() or 1}):
        torch.set_num_threads(threads)
        fns = {name: (lambda t, lrn=lrn: lrn.predict(t)) for name, lrn in v.learners.items()}
        fast = fast_predict_fn(v.ours)
        if fast is not None:
            fns["ours, client predict()"] = fast
        bars = [lrn.no_bar() for lrn in v.learners.values()]
        for b in bars:
            b.__enter__()
        try:
            ms = interleaved(fns, texts, rounds=rounds, warmup=3)
        finally:
            for b in bars:
                b.__exit__(None, None, None)
        s = {k: summary(x) for k, x in ms.items()}
        base = s["original"]["p50_ms"]
        for k in s:
            s[k]["speedup_vs_original"] = base / s[k]["p50_ms"]
        out[f"{threads}_thread{'s' if threads > 1 else ''}"] = s
    torch.set_num_threads(1)
    if fast_predict_fn(v.ours) is None:
        out["note"] = "pipeline.client has no predict() yet: its row is not measured"
    return out


def row_accuracy(v: Variants, texts: list[str], labels: list[str]) -> dict[str, Any]:
    from pipeline import evaluation as ev

    preds = {name: ev.predict_all(lrn, texts) for name, lrn in v.learners.items()}
    out = {}
    for name, p in preds.items():
        cmp = ev.compare(preds["original"], p)
        out[name] = {"accuracy": ev.accuracy(p.labels, labels), **cmp}
    return out


def row_checksum(build_dir: Path, big_mb: int, repeats: int) -> dict[str, Any]:
    import blake3

    def b3_one(path: Path) -> str:
        h = blake3.blake3(max_threads=1)
        with path.open("rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
        return h.hexdigest()

    def b3_all_mmap(path: Path) -> str:
        h = blake3.blake3(max_threads=blake3.blake3.AUTO)
        h.update_mmap(str(path))
        return h.hexdigest()

    def b3_one_mmap(path: Path) -> str:
        h = blake3.blake3(max_threads=1)
        h.update_mmap(str(path))
        return h.hexdigest()

    def sha256(path: Path) -> str:
        with path.open("rb") as f:
            return hashlib.file_digest(
                f, "sha256"
            ).hexdigest()  # reference only; releases use blake3

    methods = {
        "blake3, 1 thread": b3_one,
        "blake3, 1 thread, mmap": b3_one_mmap,
        "blake3, all threads, mmap": b3_all_mmap,
        "sha256 (reference)": sha256,
    }
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(dir=ROOT / "artifacts") as tmp:
        big = Path(tmp) / "big.bin"
        with big.open("wb") as f:
            block = os.urandom(1 << 20)
            for i in range(big_mb):
                f.write(block[i % 7 :] + block[: i % 7])
        files = {
            QUANTIZED_FILE: build_dir / QUANTIZED_FILE,
            ORIGINAL_FILE: build_dir / ORIGINAL_FILE,
            f"{big_mb} MB file": big,
        }
        for label, path in files.items():
            size = path.stat().st_size
            for fn in methods.values():
                fn(path)  # page cache warm for all methods alike
            secs: dict[str, list[float]] = {m: [] for m in methods}
            for r in range(repeats):
                order = list(methods) if r % 2 == 0 else list(methods)[::-1]
                for m in order:
                    secs[m] += repeat_seconds(lambda m=m, p=path: methods[m](p), 1)
            out[label] = {
                "bytes": size,
                **{
                    m: {
                        "median_ms": 1000 * statistics.median(s),
                        "gb_per_s": size / statistics.median(s) / 1e9,
                    }
                    for m, s in secs.items()
                },
            }
    return out


def row_build(config_path: Path) -> dict[str, Any]:
    """End-to-end `release build --force` of the config in a scratch build dir, by stage."""
    from pipeline.build import build

    c = cfg.load(config_path)
    with tempfile.TemporaryDirectory(dir=ROOT / "artifacts") as tmp:
        c2 = dataclasses.replace(c, build=dataclasses.replace(c.build, dir=Path(tmp)))
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        build(c2, force=True, timings=timings)
        total = time.perf_counter() - t0
    return {"total_seconds": total, "stages": timings}


def row_scale(config_path: Path, vocab_size: int, texts: list[str], rounds: int) -> dict[str, Any]:
    """The demo architecture with a `vocab_size`-token vocabulary (the ULMFiT default max_vocab):
    size and latency ratios as the embedding grows. One epoch: ratios, not accuracy, are the point."""
    import pandas as pd
    import torch
    from fastai.data.block import CategoryBlock, DataBlock
    from fastai.data.transforms import ColReader, RandomSplitter
    from fastai.text.core import Tokenizer
    from fastai.text.data import TextBlock
    from fastai.text.learner import text_classifier_learner
    from fastai.text.models.awdlstm import AWD_LSTM, awd_lstm_clas_config

    from pipeline.dataset import read_labelled_csv
    from pipeline.quantization import naive_quantize, quantize, select_engine, strip

    c = cfg.load(config_path)
    train = read_labelled_csv(c.data.train_csv, c.data.text_column, c.data.label_column)
    df = pd.DataFrame({"text": list(train.texts), "label": list(train.labels)})
    tok = Tokenizer.from_df("text", n_workers=0)
    seen: list[str] = []
    for toks in tok(list(df["text"])):
        seen += list(toks)
    real = sorted(set(seen))
    specials = ["xxunk", "xxpad", "xxbos", "xxeos", "xxfld", "xxrep", "xxwrep", "xxup", "xxmaj"]
    vocab = specials + [t for t in real if t not in specials]
    vocab += [f"xxfill{i}" for i in range(vocab_size - len(vocab))]
    block = DataBlock(
        blocks=(
            TextBlock.from_df("text", vocab=vocab, n_workers=0),
            CategoryBlock(vocab=train.classes),
        ),
        get_x=ColReader("text"),
        get_y=ColReader("label"),
        splitter=RandomSplitter(0.1, seed=c.train.seed),
    )
    dls = block.dataloaders(df, bs=c.train.batch_size, num_workers=0)
    t = c.train
    learn = text_classifier_learner(
        dls,
        AWD_LSTM,
        config={
            **awd_lstm_clas_config,
            "emb_sz": t.emb_sz,
            "n_hid": t.n_hid,
            "n_layers": t.n_layers,
        },
        drop_mult=t.drop_mult,
        pretrained=False,
    )
    import fastai.callback.schedule  # noqa: F401

    torch.set_num_threads(os.cpu_count() or 1)
    with learn.no_bar():
        learn.fit_one_cycle(1, t.lr)
    select_engine("auto")
    ours = quantize(strip(learn), c.quantize.modules)
    naive = naive_quantize(learn)
    learners = {"original": learn, "naive": naive, "ours": ours}
    sizes = {k: export_size(v) for k, v in learners.items()}
    torch.set_num_threads(1)
    for lrn in learners.values():
        lrn.model.eval()
    bars = [lrn.no_bar() for lrn in learners.values()]
    for b in bars:
        b.__enter__()
    try:
        ms = interleaved(
            {k: (lambda x, lrn=v: lrn.predict(x)) for k, v in learners.items()},
            texts,
            rounds=rounds,
            warmup=3,
        )
    finally:
        for b in bars:
            b.__exit__(None, None, None)
    s = {k: summary(x) for k, x in ms.items()}
    return {
        "vocab": len(dls.vocab[0]),
        "bytes": sizes,
        "ratio_vs_original": {k: sizes["original"] / v for k, v in sizes.items()},
        "latency_1_thread": s,
        "speedup_vs_original": {k: s["original"]["p50_ms"] / v["p50_ms"] for k, v in s.items()},
    }


# --- rows that exercise the client (need the client's HTTP sources) ---------------------------


def row_start(build_dir: Path) -> dict[str, Any]:
    from benchmarks import serverstart

    return serverstart.cold_and_warm(build_dir)


def row_concurrent(build_dir: Path, processes: int) -> dict[str, Any]:
    from benchmarks import serverstart

    return serverstart.concurrent(build_dir, processes)


def row_fleet(build_dir: Path, processes: int) -> dict[str, Any]:
    from benchmarks import serverstart

    return serverstart.fleet(build_dir, processes)


# --- output ------------------------------------------------------------------------------------


def mb(n: float) -> str:
    return f"{n / 1e6:.1f} MB"


def render(results: dict[str, Any], command: str) -> str:
    m = results["machine"]
    lines = [
        "# Benchmarks",
        "",
        f"Measured {m['date']} on {m['cores']} cores ({m['cpu']}), Python {m['python']}, torch {m['torch']}, "
        f"quantized engine {m['quantized_engine']}. Command: `{command}`.",
        "Every comparison ran in one process tree, variants interleaved, repeated; p50 is the median over rounds of each "
        "round's p50, with the min-max of those p50s as the spread.",
        "",
    ]
    r = results["rows"]
    if "size" in r:
        s = r["size"]
        lines += ["## 1. Model size", "", "| variant | size | ratio vs original |", "|---|---|---|"]
        for k in ("original", "naive", "ours"):
            lines.append(f"| {k} | {mb(s['bytes'][k])} | {s['ratio_vs_original'][k]:.2f}x |")
        lines.append("")
    if "latency" in r:
        lines += ["## 2. `learn.predict` latency, batch 1", ""]
        for threads, s in r["latency"].items():
            if threads == "note":
                continue
            lines += [
                f"### {threads.replace('_', ' ')}",
                "",
                "| variant | p50 | p95 | p50 spread | speedup vs original |",
                "|---|---|---|---|---|",
            ]
            for k, x in s.items():
                lines.append(
                    f"| {k} | {x['p50_ms']:.1f} ms | {x['p95_ms']:.1f} ms | {x['p50_min_ms']:.1f}-{x['p50_max_ms']:.1f} ms | {x['speedup_vs_original']:.2f}x |"
                )
            lines.append("")
        if "note" in r["latency"]:
            lines += [f"Note: {r['latency']['note']}.", ""]
    if "accuracy" in r:
        lines += [
            "## 3. Accuracy and agreement (demo eval set)",
            "",
            "| variant | accuracy | agreement with original | max prob diff |",
            "|---|---|---|---|",
        ]
        for k, x in r["accuracy"].items():
            lines.append(
                f"| {k} | {100 * x['accuracy']:.1f}% | {100 * x['agreement']:.1f}% | {x['max_prob_diff']:.2e} |"
            )
        lines.append("")
    if "checksum" in r:
        lines += ["## 4. Checksum throughput (the verify cost per server start)", ""]
        methods = [k for k in next(iter(r["checksum"].values())) if k != "bytes"]
        lines += ["| file | " + " | ".join(methods) + " |", "|---|" + "---|" * len(methods)]
        for f, x in r["checksum"].items():
            cells = [f"{x[m]['median_ms']:.1f} ms ({x[m]['gb_per_s']:.2f} GB/s)" for m in methods]
            lines.append(f"| {f} ({mb(x['bytes'])}) | " + " | ".join(cells) + " |")
        lines.append("")
    if "start" in r:
        lines += ["## 5. Server start", ""] + r["start"]["table"] + [""]
    if "concurrent" in r:
        lines += (
            ["## 6. Processes cold-starting at once on one cache", ""]
            + r["concurrent"]["table"]
            + [""]
        )
    if "fleet" in r:
        lines += (
            ["## 6b. A fleet cold-starting at once: HTTP mirror and S3 side by side", ""]
            + r["fleet"]["table"]
            + [""]
        )
    if "scale" in r:
        s = r["scale"]
        lines += [
            f"## 7. Scale: the demo architecture with a {s['vocab']:,}-token vocabulary",
            "",
            "| variant | size | ratio vs original | predict p50 (1 thread) | speedup vs original |",
            "|---|---|---|---|---|",
        ]
        for k in ("original", "naive", "ours"):
            lines.append(
                f"| {k} | {mb(s['bytes'][k])} | {s['ratio_vs_original'][k]:.2f}x | {s['latency_1_thread'][k]['p50_ms']:.1f} ms | {s['speedup_vs_original'][k]:.2f}x |"
            )
        lines.append("")
    if "batch" in r:
        from benchmarks.fleet import batch_table

        lines += ["## 9. `predict_batch` against a loop of `predict` (texts/s)", ""]
        lines += batch_table(r["batch"], r["batch"]["model"]) + [""]
    if "rollout" in r:
        from benchmarks.fleet import rollout_table

        lines += ["## 10. A channel rollout and rollback to watching servers", ""]
        lines += rollout_table(r["rollout"], r["rollout"]["model"]) + [""]
    if "build" in r:
        b = r["build"]
        lines += [
            f"## 8. `release build --force` on the demo config: {b['total_seconds']:.0f} s",
            "",
            "| stage | seconds |",
            "|---|---|",
        ]
        lines += [f"| {k} | {v:.1f} |" for k, v in b["stages"].items()]
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", type=Path, default=ROOT / "release.toml")
    ap.add_argument(
        "--rows",
        default=",".join(ALL_ROWS),
        help=f"comma-separated subset of {', '.join(ALL_ROWS)}",
    )
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--queries", type=int, default=40, help="eval queries per latency round")
    ap.add_argument("--big-mb", type=int, default=1024, help="size of the large checksum file")
    ap.add_argument("--processes", type=int, default=16)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    logging.getLogger("pipeline").setLevel(logging.WARNING)
    rows = [x.strip() for x in args.rows.split(",") if x.strip()]
    unknown = set(rows) - set(ALL_ROWS)
    if unknown:
        ap.error(f"unknown rows: {', '.join(sorted(unknown))}")
    (ROOT / "artifacts").mkdir(exist_ok=True)
    c = cfg.load(args.config)
    shown = args.config.resolve()
    shown = shown.relative_to(ROOT) if shown.is_relative_to(ROOT) else shown
    results: dict[str, Any] = {"machine": machine(), "config": str(shown), "rows": {}}
    if "build" in rows:
        log.info("row 8: release build --force (this takes minutes)")
        results["rows"]["build"] = row_build(args.config)
    from pipeline.build import build, current_build

    if current_build(c) is None:
        log.info("no current build of %s: building it first", args.config)
        build(c)
    from pipeline.dataset import read_labelled_csv

    ev = read_labelled_csv(c.data.eval_csv, c.data.text_column, c.data.label_column, min_classes=1)
    texts = list(ev.texts)[: args.queries]
    import torch

    torch.set_num_threads(1)
    v = Variants(c.build_dir)
    if "size" in rows:
        log.info("row 1: sizes")
        results["rows"]["size"] = row_size(v)
    if "latency" in rows:
        log.info("row 2: latency")
        results["rows"]["latency"] = row_latency(v, texts, args.rounds)
    if "accuracy" in rows:
        log.info("row 3: accuracy")
        results["rows"]["accuracy"] = row_accuracy(v, list(ev.texts), list(ev.labels))
    del v
    if "checksum" in rows:
        log.info("row 4: checksums")
        results["rows"]["checksum"] = row_checksum(c.build_dir, args.big_mb, args.rounds)
    if "start" in rows:
        log.info("row 5: server start")
        results["rows"]["start"] = row_start(c.build_dir)
    if "concurrent" in rows:
        log.info("row 6: %d processes at once", args.processes)
        results["rows"]["concurrent"] = row_concurrent(c.build_dir, args.processes)
    if "fleet" in rows:
        log.info("row 6b: %d processes at once, HTTP mirror and S3", args.processes)
        results["rows"]["fleet"] = row_fleet(c.build_dir, args.processes)
    if "scale" in rows:
        log.info("row 7: 60,000-token vocabulary")
        results["rows"]["scale"] = row_scale(args.config, 60_000, texts, args.rounds)
    if "batch" in rows or "rollout" in rows:
        from benchmarks import fleet as fleet_bench

        what = f"the demo model ({c.model.name} {c.model.version})"
        for row, run_row in (
            ("batch", lambda: fleet_bench.batch(c.build_dir, args.rounds)),
            ("rollout", lambda: fleet_bench.rollout(c.build_dir, args.processes)),
        ):
            if row not in rows:
                continue
            log.info("row %s (benchmarks/fleet.py; alone: python -m benchmarks.fleet)", row)
            before = fleet_bench.load_average()
            out = run_row()
            out.update(model=what, load_before=before, load_after=fleet_bench.load_average())
            results["rows"][row] = out
    command = (
        "python -m benchmarks.run"
        + (f" {' '.join(argv)}" if argv else " " + " ".join(sys.argv[1:])).rstrip()
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    (args.out / "results.md").write_text(render(results, command.strip()) + "\n")
    print((args.out / "results.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
