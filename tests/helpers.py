"""Small helpers shared by test files that have no fixture in common: a fresh interpreter,
the smallest valid release.toml, a small tokenizer.json document."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

# The smallest release.toml `config.load` accepts: the bundled demo data, every default.
MINIMAL_TOML = """
schema_version = 1
[model]
name = "m"
version = "1.0.0"
[data]
train_csv = "bundled:train.csv"
eval_csv = "bundled:eval.csv"
"""


def small_build_toml(name: str, *, train: str, validate: str) -> str:
    """release.toml of a build of `name` 0.0.1 on ./train.csv and ./eval.csv by a network of
    two 16/24 layers, without the onnx variant, timing 2 queries without warm-up: a build of
    seconds. `train` and `validate` are more lines of those tables."""
    return f"""schema_version = 1
[model]
name = "{name}"
version = "0.0.1"
[data]
train_csv = "train.csv"
eval_csv = "eval.csv"
[train]
{train}emb_sz = 16
n_hid = 24
n_layers = 2
[onnx]
enabled = false
[validate]
latency_queries = 2
warmup = 0
{validate}"""


def run_python(
    *args: str,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float | None = 120,
    **popen: Any,
) -> subprocess.CompletedProcess[str]:
    """`python ARGS` in a fresh interpreter (`"-m", "pipeline", ...` is `release ...`), its
    output captured as text; a non-zero exit is the caller's to check."""
    return subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        **popen,
    )


def installed_python(code: str) -> str:
    """The output of `code` in a fresh interpreter that imports `pipeline` as installed, without
    this checkout's PYTHONPATH: what a server sees at import time.

    Raises:
        subprocess.CalledProcessError: `code` failed.
    """
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return run_python("-c", code, env=env, check=True).stdout


def tokenizer_spec(**fields: Any) -> dict[str, Any]:
    """A small tokenizer.json document (`pipeline.client.tokenizer` format 1): `fields` replace
    the defaults."""
    from pipeline.client.tokenizer import FORMAT

    return {
        "format": FORMAT,
        "format_version": 1,
        "rules": ["replace_maj", "lowercase"],
        "post_rules": [],
        "tokenizer": {"type": "spacy", "special_cases": {"xxbos": ["xxbos"], "xxmaj": ["xxmaj"]}},
        "vocab": ["xxunk", "xxpad", "xxbos", "xxmaj", "hello", "world", "xxfake"],
        "unmapped_tokens": ["xxfake"],
        "unknown_id": 0,
        "pad_id": 1,
        "chunking": {"bptt": 72, "max_len": 1440},
        "labels": ["a", "b"],
        **fields,
    }
