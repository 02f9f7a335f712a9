"""The learner zoo (tests/zoo.py): learners made with plain fastai the ways users make them.

Each is released with every variant it supports, or refused while loading, before any long
work, with one sentence naming what is unsupported and what to do. Two are released end to end
through the CLI as a user would: a plain `TextDataLoaders.from_df` learner that answered one
`predict` before export (build, publish, fetch --load) and a SentencePiece learner (pickle
variants only, the onnx skip explained).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from pipeline import config as cfg
from pipeline import manifest as mf
from pipeline.errors import InputError
from pipeline.stages import BuildContext, run_stages
from pipeline.stages.inputs import CheckInputs
from pipeline.stages.onnx import ExportOnnx
from pipeline.stages.quantize import Quantize
from pipeline.stages.strip import Strip
from pipeline.stages.train import TrainOrLoad
from pipeline.stages.validate import agreements, onnx_classifier, predict_variants
from tests import zoo
from tests.helpers import run_python

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]

# Loose gates: the zoo proves that each kind of learner goes through the pipeline; a model
# trained for one epoch on 150 rows is not judged on accuracy or speed.
LOOSE = """
[validate]
latency_queries = 3
warmup = 0
golden_queries = 3
min_size_ratio = 0.0
min_speedup = 0.0
max_accuracy_drop = 100.0
min_agreement = 0.0
max_p95_ms = 100000.0
beat_majority = false
max_baseline_deficit = 100.0
"""


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:40]


@pytest.fixture(scope="session")
def zoo_dir(tmp_path_factory) -> Path:
    """Every zoo learner trained once and exported, plus the train and eval CSVs."""
    import torch

    d = tmp_path_factory.mktemp("zoo")
    train, eval_ = zoo.dataset()
    train.to_csv(d / "train.csv", index=False)
    eval_.to_csv(d / "eval.csv", index=False)
    from fastai.torch_core import set_seed

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    set_seed(0, reproducible=True)
    start = time.perf_counter()
    try:
        for name, (make, _) in zoo.ZOO.items():
            work = d / slug(name)
            work.mkdir()
            learn = make(train, work)
            learn.export(work / "export.pkl")
            # what a user's machine keeps is the pickle: the training folder (SentencePiece's
            # model, saved encoders) is gone when the release is built elsewhere
            for p in sorted(work.rglob("*"), reverse=True):
                if p.name != "export.pkl":
                    p.unlink() if p.is_file() else p.rmdir()
    finally:
        torch.set_num_threads(threads)
    print(f"\nzoo: {len(zoo.ZOO)} learners trained in {time.perf_counter() - start:.1f}s")
    return d


def config_for(zoo_dir: Path, name: str, out: Path, extra: str = "") -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / "release.toml"
    path.write_text(
        f"""schema_version = 1
[model]
name = "zoo-{slug(name)}"
version = "0.0.1"
[data]
train_csv = "{zoo_dir / "train.csv"}"
eval_csv = "{zoo_dir / "eval.csv"}"
[train]
export_pkl = "{zoo_dir / slug(name) / "export.pkl"}"
{LOOSE}
{extra}"""
    )
    return path


@pytest.mark.parametrize("name", list(zoo.ZOO))
def test_each_learner_is_released_or_refused_before_long_work(zoo_dir, tmp_path, name) -> None:
    expected = zoo.ZOO[name][1]
    config = cfg.load(config_for(zoo_dir, name, tmp_path))
    ctx = BuildContext(config=config, build_dir=tmp_path / "build")
    stages = [CheckInputs(), TrainOrLoad(loading=True), Strip(), Quantize(), ExportOnnx()]
    if expected.startswith("refused: "):
        with pytest.raises(InputError) as e:
            run_stages(stages, ctx)
        message = str(e.value)
        assert message.startswith("loading the learner: ") and expected[9:] in message, message
        assert "train it with" in message  # what to do
        assert "stripping training wrappers" not in ctx.stage_seconds  # nothing long ran
        return
    run_stages(stages, ctx)
    onnx = onnx_classifier(ctx)
    if expected == "release":
        assert "exporting onnx" not in ctx.skipped and onnx is not None
    else:
        reason = ctx.skipped["exporting onnx"]
        assert expected.removeprefix("no-onnx: ") in reason and "pickle variants" in reason, reason
        assert onnx is None and not (ctx.build_dir / mf.TOKENIZER_FILE).exists()
    texts = list(ctx.eval_data.texts)
    preds = predict_variants(ctx, texts, onnx)
    assert set(preds) == ({"original", "quantized", "onnx"} if onnx else {"original", "quantized"})
    for variant, cmp in agreements(preds).items():
        # a one-epoch model can leave classes nearly tied, where INT8 may flip a label: then
        # the probabilities themselves must match
        assert cmp["agreement"] >= 0.9 or cmp["max_prob_diff"] < 0.05, (variant, cmp)
    # texts longer than 2 x seq_len (the last rows) and two short ones: the pickles' batched
    # predictions above equal their answers one text at a time, and the onnx variant (which
    # steps through the chunks itself, one text at a time) answers the long texts like them
    picked = [i for i, t in enumerate(texts) if len(t.split()) > 150] + [0, 1]
    assert len(picked) == len(zoo.LABELS) + 2
    for variant, learn in (("original", ctx.original_learner()), ("quantized", ctx.quantized)):
        for i in picked:
            with learn.no_bar():
                probs = learn.predict(texts[i])[2].numpy()
            worst = float(abs(preds[variant].probs[i] - probs).max())
            # dynamic INT8 quantizes activations per batch: close, not equal
            assert worst < (1e-5 if variant == "original" else 0.05), (variant, i, worst)
    if onnx is not None:
        diff = abs(preds["onnx"].probs[picked] - preds["original"].probs[picked]).max()
        assert diff < 0.05, diff


def test_min_freq_is_the_users_choice(zoo_dir) -> None:
    from pipeline.learner_file import load_exported

    def vocab(name: str) -> int:
        return len(load_exported(zoo_dir / slug(name) / "export.pkl").dls.vocab[0])

    assert vocab("DataBlock, min_freq 1") > vocab("DataBlock, 1 layer") + 20  # min_freq 3


def test_onnx_required_refuses_an_unsupported_learner_before_quantizing(zoo_dir, tmp_path) -> None:
    name = "SentencePiece tokenizer"
    config = cfg.load(config_for(zoo_dir, name, tmp_path, "[onnx]\nenabled = true\n"))
    ctx = BuildContext(config=config, build_dir=tmp_path / "build")
    with pytest.raises(InputError) as e:
        run_stages([CheckInputs(), TrainOrLoad(loading=True), Strip(), Quantize()], ctx)
    assert "SentencePieceTokenizer" in str(e.value)
    assert 'release.toml: onnx.enabled = true requires the onnx variant: set it to "auto"' in str(
        e.value
    )
    assert "quantizing" not in ctx.stage_seconds


def release(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return run_python(
        "-m", "pipeline", *args, cwd=cwd, env=env, timeout=None, preexec_fn=lambda: os.umask(0o022)
    )


def modes(directory: Path) -> dict[str, str]:
    return {
        str(p.relative_to(directory)): oct(p.stat().st_mode & 0o777)
        for p in [directory, *directory.rglob("*")]
        if not p.name.startswith(".") and ".lock" not in p.name
    }


def test_a_plain_fastai_learner_releases_end_to_end(zoo_dir, tmp_path) -> None:
    name = "from_df, min_freq 3, predict before export"
    work = tmp_path / "user"
    config_for(zoo_dir, name, work)
    built = release("build", cwd=work)
    assert built.returncode == 0, built.stderr[-3000:]
    assert "release zoo-" in built.stderr and "ready" in built.stderr
    published = release("publish", cwd=work)
    assert published.returncode == 0, published.stderr[-3000:]
    store = work / "artifacts" / "releases"
    fetched = release(
        "fetch", f"zoo-{slug(name)}", "--version", "latest", "--source", str(store),
        "--cache-dir", str(work / "cache"), "--load", cwd=work,
    )  # fmt: skip
    assert fetched.returncode == 0, fetched.stderr[-3000:]
    rebuilt = release("build", cwd=work)  # the same version again: warned before any work
    assert rebuilt.returncode == 0
    assert "is already published in the local store" in rebuilt.stderr
    assert rebuilt.stderr.index("already published") < rebuilt.stderr.index("checking inputs")
    # every file the build, the store and the cache wrote is readable by others (umask 022)
    for directory in (work / "artifacts" / "build", store, work / "cache"):
        found = modes(directory)
        wrong = {k: v for k, v in found.items() if v not in ("0o644", "0o755")}
        assert not wrong, wrong
    assert modes(store)[f"zoo-{slug(name)}/latest"] == "0o644"
    files = {p.name for p in (work / "artifacts" / "build" / "0.0.1").iterdir()}
    assert {mf.ONNX_FILE, mf.TOKENIZER_FILE, "report.md", "report.json"} <= files


def test_a_sentencepiece_learner_releases_its_pickles_and_says_why_not_onnx(
    zoo_dir, tmp_path
) -> None:
    work = tmp_path / "user"
    config_for(zoo_dir, "SentencePiece tokenizer", work)
    built = release("build", cwd=work)
    assert built.returncode == 0, built.stderr[-3000:]
    assert (
        "exporting onnx: skipped, this learner is not supported by the onnx export" in built.stderr
    )
    assert "no onnx variant: " in built.stderr
    d = work / "artifacts" / "build" / "0.0.1"
    manifest = json.loads((d / mf.MANIFEST_NAME).read_text())
    assert {f["variant"] for f in manifest["files"]} == {"original", "quantized", None}
    assert "SentencePieceTokenizer" in manifest["validation"]["variants_skipped"]["onnx"]
    report = (d / "report.md").read_text()
    assert "- onnx variant: not built, this learner is not supported" in report
