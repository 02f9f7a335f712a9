"""Hostile and large inputs against both predict paths, and the tokenizers' growth with input size.

    python -m benchmarks.predict_inputs [--build-dir artifacts/build/1.0.0] [--no-spacy]

- inputs: each text (1 MB of prose, 8 kB of `)]`, 64 kB of `a:`, long unicode runs, many URLs,
  emoji, and the worst texts the default limits let through) through the client's `predict()`
  on the quantized pickle (fastai model, the client's linear tokenizer) and on the onnx variant,
  with the default `InputLimits`: the time until it is answered or refused, and which. One torch
  and one onnxruntime thread; each the best of 3, wall and CPU time (on a shared machine the CPU
  time is what an idle core would take).
- growth: the tokenizer alone, limits off, on n and 4n characters of each hostile pattern
  (4x more time is linear, 16x quadratic; CPU time), with spaCy's own tokenizer beside it on
  smaller n (`--no-spacy` leaves it out).
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path
from typing import Any

from pipeline.client.limits import InputLimits, InputTooLarge

ROOT = Path(__file__).resolve().parent.parent
WORDS = [
    "where",
    "is",
    "the",
    "credit",
    "check",
    "done",
    "when",
    "an",
    "order",
    "is",
    "released",
    "?",
    "the",
    "sales",
    "order",
    "API",
    "returns",
    "a",
    "500",
    "error",
    ",",
    "see",
    "http://erp.example.com/orders?id=42",
    "and",
    "(",
    "e.g.",
    ")",
    "the",
    "customer's",
    "invoice",
    ".",
]


def prose(n: int, seed: int = 0) -> str:
    rng = random.Random(seed)
    out, size = [], 0
    while size < n:
        w = rng.choice(WORDS)
        out.append(w)
        size += len(w) + 1
    return " ".join(out)[:n]


def runs(unit: str, run: int, total: int) -> str:
    """Runs of `run` characters of `unit`, each made different, up to `total` characters."""
    pieces, i = [], 0
    while sum(len(p) + 1 for p in pieces) + run < total:
        pieces.append(chr(0x4E00 + i) + (unit * run)[: run - 1])
        i += 1
    return " ".join(pieces)


def inputs(limits: InputLimits) -> dict[str, str]:
    r = limits.max_run or 1000
    c = limits.max_chars or 10_000
    return {
        "1 MB of prose": prose(1_000_000),
        "8 kB of `)]`": ")]" * 4000,
        "64 kB of `a:`": "a:" * 32_000,
        "64 kB unicode run (日本語)": "日本語のテキスト" * 8000,
        "2,000 URLs (64 kB)": " ".join(f"http://h{i}.example.com/p?q={i}" for i in range(2000)),
        "16 k emoji": "😀🎉" * 8000,
        f"prose at the character limit ({c:,} chars)": prose(c),
        f"`)]` runs of {r:,} up to {c:,} chars": runs(")]", r, c),
        f"`a:` runs of {r:,} up to {c:,} chars": runs("a:", r, c),
        f"emoji runs of {r:,} up to {c:,} chars": runs("😀🎉", r, c),
        f"`'s` runs of {r:,} up to {c:,} chars": runs("'s", r, c),
    }


def timed(fn: Any, text: str, repeats: int = 3) -> tuple[float, float, str]:
    """(wall seconds, CPU seconds, outcome), each the best of `repeats`. With one thread, the CPU
    time is what the wall time is on an idle core (the machine may be shared)."""
    wall = cpu = float("inf")
    outcome = ""
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        try:
            label = fn(text)[0]
            outcome = f"answered ({label})"
        except InputTooLarge as e:
            outcome = f"refused ({e.setting}: {e.found:,} > {e.limit:,})"
        wall = min(wall, time.perf_counter() - start)
        cpu = min(cpu, time.process_time() - start_cpu)
    return wall, cpu, outcome


def predict_rows(build_dir: Path) -> list[str]:
    import torch
    from fastai.learner import load_learner

    from pipeline.client.onnx_model import OnnxClassifier
    from pipeline.client.predict import Predictor
    from pipeline.client.tokenizer import TextTokenizer
    from pipeline.manifest import ONNX_FILE, QUANTIZED_FILE, TOKENIZER_FILE

    torch.set_num_threads(1)
    limits = InputLimits()
    learn = load_learner(build_dir / QUANTIZED_FILE)
    pickle_path = Predictor(learn, limits=limits)
    assert pickle_path.port is not None, "the linear tokenizer does not apply to this learner"
    onnx_path = OnnxClassifier(build_dir / ONNX_FILE, build_dir / TOKENIZER_FILE)
    onnx_path.tokenizer.limits = limits
    rows = [
        f"Default limits: {limits.max_chars:,} characters, runs of {limits.max_run:,}, "
        f"{limits.max_tokens:,} tokens.",
        "",
        "| input | chars | quantized pickle `predict()` | onnx `predict()` |",
        "|---|---|---|---|",
    ]
    cases = inputs(limits)
    n_tokens = limits.max_tokens or 1024
    words = prose(20 * n_tokens).split(" ")
    counter = TextTokenizer(onnx_path.tokenizer.spec, limits=InputLimits.unlimited())
    lo, hi = 1, len(words)  # the longest prose the token limit lets through
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if len(counter.tokens(" ".join(words[:mid]))) <= n_tokens:
            lo = mid
        else:
            hi = mid - 1
    cases[f"prose at the token limit ({n_tokens:,} tokens)"] = " ".join(words[:lo])
    for name, text in cases.items():
        cells = []
        for fn in (pickle_path, onnx_path):
            wall, cpu, outcome = timed(fn, text)
            cells.append(f"{wall * 1000:,.1f} ms ({cpu * 1000:,.1f} ms CPU), {outcome}")
        rows.append(f"| {name} | {len(text):,} | {cells[0]} | {cells[1]} |")
        print(rows[-1], file=sys.stderr, flush=True)
    return rows


def growth_rows(build_dir: Path, with_spacy: bool) -> list[str]:
    from pipeline.client.tokenizer import TextTokenizer
    from pipeline.manifest import TOKENIZER_FILE

    port = TextTokenizer.from_file(build_dir / TOKENIZER_FILE, limits=InputLimits.unlimited())
    nlp = None
    if with_spacy:
        import spacy

        nlp = spacy.blank("en")
    sizes = {"client": 8_000, "spaCy": 1_000}  # spaCy's curve makes 4 x 8,000 take minutes
    rows = [
        f"| pattern (CPU time) | this client, {sizes['client']:,} / {4 * sizes['client']:,} "
        f"chars | ratio | spaCy, {sizes['spaCy']:,} / {4 * sizes['spaCy']:,} chars | ratio |",
        "|---|---|---|---|---|",
    ]
    for unit in (")]", "a:", "'s", "😀🎉", "([", "\"'"):
        cells = []
        for who, tokenize in (("client", port.tokens), ("spaCy", nlp.tokenizer if nlp else None)):
            if tokenize is None:
                cells += ["-", "-"]
                continue
            t = []
            for size in (sizes[who], 4 * sizes[who]):
                text = (unit * size)[:size]
                best = float("inf")
                for _ in range(3 if who == "client" else 1):  # spaCy's runs take seconds
                    start = time.process_time()
                    tokenize(text)
                    best = min(best, time.process_time() - start)
                t.append(best)
            cells += [f"{t[0] * 1000:,.0f} / {t[1] * 1000:,.0f} ms", f"{t[1] / t[0]:.1f}x"]
        rows.append(f"| `{unit}` | {' | '.join(cells)} |")
        print(rows[-1], file=sys.stderr, flush=True)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--build-dir", type=Path, default=ROOT / "artifacts" / "build" / "1.0.0")
    parser.add_argument("--no-spacy", action="store_true", help="leave spaCy's column out")
    args = parser.parse_args(argv)
    rows = predict_rows(args.build_dir)
    rows += ["", *growth_rows(args.build_dir, not args.no_spacy)]
    print("\n".join(rows))


if __name__ == "__main__":
    main()
