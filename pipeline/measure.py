"""Measurements: interleaved latency, and load time / peak RSS in a fresh interpreter."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

# Runs in a fresh interpreter that imports only fastai (never `pipeline`): it proves the file
# loads with plain fastai and measures what a server pays to load it.
# Shared by the probes below (pasted where they say "# RSS_MB"): RSS of the probe itself.
_RSS_MB = r"""
def rss_mb(field):
    # VmHWM/VmRSS belong to this process's own memory map. ru_maxrss would not do: Linux carries
    # it over from the parent across fork+exec, so a child of a big build reports the build's peak.
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
"""

_LOAD_PROBE = r"""
import json, resource, sys, time, warnings
warnings.simplefilter("ignore")

# RSS_MB

import torch
torch.set_num_threads(int(sys.argv[2]))
t0 = time.perf_counter()
from fastai.learner import load_learner
import_s = time.perf_counter() - t0
rss_before = rss_mb("VmRSS")
t0 = time.perf_counter()
learn = load_learner(sys.argv[1])
load_s = time.perf_counter() - t0
with learn.no_bar():
    t0 = time.perf_counter()
    label = str(learn.predict(sys.argv[3])[0])
    first_predict_s = time.perf_counter() - t0
print(json.dumps({
    "import_seconds": import_s,
    "load_seconds": load_s,
    "first_predict_seconds": first_predict_s,
    "rss_before_load_mb": rss_before,
    "peak_rss_mb": rss_mb("VmHWM"),
    "imported_pipeline": any(m == "pipeline" or m.startswith("pipeline.") for m in sys.modules),
    "label": label,
}))
""".replace("# RSS_MB\n", _RSS_MB)


def fresh_process_load(path: Path, threads: int, text: str, timeout: float = 600) -> dict[str, Any]:
    """Load `path` with plain fastai in a new interpreter; return its timings and peak RSS."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(
        [sys.executable, "-c", _LOAD_PROBE, str(Path(path).resolve()), str(threads), text],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=Path(path)
        .resolve()
        .parent,  # not the repo: `pipeline` must not be importable by accident
        env=env,
    )
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-8:])
        raise RuntimeError(
            f"{Path(path).name}: plain fastai load_learner failed in a fresh process:\n{tail}"
        )
    return json.loads(proc.stdout.strip().splitlines()[-1])


# The onnx variant as a server without torch loads it: only pipeline.client.onnx_model (which
# imports onnxruntime, numpy and the JSON tokenizer). It reports whether torch or fastai came in.
_ONNX_PROBE = r"""
import json, resource, sys, time

# RSS_MB

t0 = time.perf_counter()
from pipeline.client.onnx_model import OnnxClassifier
import_s = time.perf_counter() - t0
rss_before = rss_mb("VmRSS")
t0 = time.perf_counter()
clf = OnnxClassifier(sys.argv[1], sys.argv[2], threads=int(sys.argv[3]))
load_s = time.perf_counter() - t0
t0 = time.perf_counter()
label = clf.predict(sys.argv[4]).label
first_predict_s = time.perf_counter() - t0
print(json.dumps({
    "import_seconds": import_s,
    "load_seconds": load_s,
    "first_predict_seconds": first_predict_s,
    "rss_before_load_mb": rss_before,
    "peak_rss_mb": rss_mb("VmHWM"),
    "imported_torch": "torch" in sys.modules,
    "imported_fastai": "fastai" in sys.modules,
    "label": label,
}))
""".replace("# RSS_MB\n", _RSS_MB)


def fresh_process_load_onnx(
    model: Path, tokenizer: Path, threads: int, text: str, timeout: float = 600
) -> dict[str, Any]:
    """Load the onnx variant with the client alone in a new interpreter; timings and peak RSS."""
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            _ONNX_PROBE,
            str(Path(model).resolve()),
            str(Path(tokenizer).resolve()),
            str(threads),
            text,
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=Path(model).resolve().parent,
    )
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-8:])
        raise RuntimeError(
            f"{Path(model).name}: the onnx client failed in a fresh process:\n{tail}"
        )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def interleaved_latency(
    learners: dict[str, Any], texts: list[str], *, threads: int, warmup: int
) -> dict[str, list[float]]:
    """Milliseconds per `learn.predict(text)` at batch 1, the variants interleaved A B A B.

    A value may also be a plain callable `f(text)` (a client's predict, the onnx variant), timed
    the same way in the same rounds. The order within each round alternates (A B, then B A) so
    that neither variant always runs right after the other's cache effects; machine noise hits
    all alike.
    """
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    names = list(learners)
    calls = {
        n: learners[n].predict if hasattr(learners[n], "no_bar") else learners[n] for n in names
    }
    out: dict[str, list[float]] = {n: [] for n in names}
    try:
        bars = [learners[n].no_bar() for n in names if hasattr(learners[n], "no_bar")]
        for b in bars:
            b.__enter__()
        try:
            for n in names:
                for i in range(warmup):
                    calls[n](texts[i % len(texts)])
            for i, text in enumerate(texts):
                order = names if i % 2 == 0 else names[::-1]
                for n in order:
                    t0 = time.perf_counter()
                    calls[n](text)
                    out[n].append((time.perf_counter() - t0) * 1000)
        finally:
            for b in bars:
                b.__exit__(None, None, None)
    finally:
        torch.set_num_threads(old)
    return out


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100) of a non-empty list."""
    xs = sorted(values)
    if len(xs) == 1:
        return xs[0]
    k = (len(xs) - 1) * q / 100
    lo = int(k)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)
