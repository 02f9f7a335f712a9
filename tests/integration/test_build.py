"""Real builds of a tiny AWD_LSTM (trains in seconds), through the library and the CLI."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline import config as cfg
from pipeline import manifest as mf
from pipeline.build import build
from pipeline.errors import GateFailed, InputError
from tests.integration.conftest import (
    BUNDLED_EVAL,
    assert_close_answers,
    long_eval_texts,
    tiny_toml,
)

pytestmark = pytest.mark.slow
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def release(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "RELEASE_CACHE_DIR": str(cwd / "cache")}
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args], cwd=cwd, capture_output=True, text=True, env=env
    )


def fresh_copy(tiny, tmp_path: Path, extra: str = "") -> Path:
    work, _ = tiny
    dst = tmp_path / "w"
    shutil.copytree(work, dst, ignore=shutil.ignore_patterns("releases", "cache"))
    (dst / "release.toml").write_text(tiny_toml(work) + extra)
    return dst


def test_build_writes_a_complete_verified_release(tiny) -> None:
    work, m = tiny
    d = work / "artifacts" / "build" / "0.0.1"
    assert mf.verify_dir(d) == m
    names = {f.name for f in m.files}
    assert names == {
        "export.pkl",
        "export_quantized.pkl",
        "report.md",
        "report.json",
        "latency.png",
        "confusion_original.png",
        "confusion_quantized.png",
        "model_int8.onnx",
        "tokenizer.json",
        "confusion_onnx.png",
    }
    assert m.labels == tuple(sorted(m.labels)) and len(m.labels) == 7
    assert {"python", "torch", "fastai", "fastcore", "quantized_engine"} <= set(m.environment)
    assert 1 <= len(m.golden_queries) <= 7
    assert m.validation["passed"] is True
    # 12 of the variants + the TF-IDF baseline (tiny.toml turns the majority-class gate off)
    # + 3 on the challenge set
    assert len(m.validation["thresholds"]) == 16
    assert {"baseline_deficit_points", "challenge_baseline_deficit_points"} <= set(
        m.validation["thresholds"]
    )
    report = json.loads((d / "report.json").read_text())
    s = report["validate"]["summary"]
    assert s == m.validation["metrics"]
    assert report["validate"]["latency"]["interleaved"] is True
    assert len(report["validate"]["latency"]["original"]["samples_ms"]) == 8
    assert report["validate"]["baseline"]["accuracy"] > 0.5
    assert report["validate"]["load"]["quantized"]["imported_pipeline"] is False
    md = (d / "report.md").read_text()
    assert (
        "**PASSED**" in md
        and f"{100 * s['accuracy_original']:.1f}%" in md
        and f"{s['size_ratio']:.2f}x" in md
    )
    # the challenge set: every variant and the baseline, in the summary, report.json and report.md
    ch = report["validate"]["challenge"]
    detail = json.loads((d / "predictions.json").read_text())  # per text, not published
    assert ch["rows"] == s["challenge_rows"] == 240
    assert len(detail["challenge"]["predictions"]["onnx"]) == 240
    for name in ("original", "quantized", "onnx"):
        assert s[f"challenge_accuracy_{name}"] == ch["variants"][name]["accuracy"]
    assert s["challenge_baseline_accuracy"] == ch["baseline"]["accuracy"] > 0.5
    assert s["challenge_baseline_deficit_points"] == pytest.approx(
        100 * (s["challenge_baseline_accuracy"] - s["challenge_accuracy_quantized"])
    )
    # text by text against the baseline: the counts are the accuracy gap, and the report says it
    for prefix, truth, quantized, base in (
        (
            "",
            detail["eval_labels"],
            detail["variants"]["quantized"]["predictions"],
            detail["baseline_predictions"],
        ),
        (
            "challenge_",
            detail["challenge"]["labels"],
            detail["challenge"]["predictions"]["quantized"],
            detail["challenge"]["baseline_predictions"],
        ),
    ):
        right_q = [p == t for p, t in zip(quantized, truth, strict=True)]
        right_b = [p == t for p, t in zip(base, truth, strict=True)]
        assert s[f"{prefix}quantized_only_right"] == sum(
            q and not b for q, b in zip(right_q, right_b, strict=True)
        )
        assert s[f"{prefix}baseline_only_right"] == sum(
            b and not q for q, b in zip(right_q, right_b, strict=True)
        )
        assert 0 < s[f"{prefix}baseline_mcnemar_p"] <= 1
    assert (
        f"Text by text on the challenge set: {s['challenge_quantized_only_right']} answered right "
        f"only by the quantized model, {s['challenge_baseline_only_right']} only by the baseline"
    ) in md
    assert "| model | eval set | challenge set |" in md
    assert f"| quantized (`export_quantized.pkl`) | {100 * s['accuracy_quantized']:.1f}% | " in md
    assert "challenge-set accuracy (quantized)" in md
    for png in ("latency.png", "confusion_original.png"):
        assert (d / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # golden queries are answered correctly by both variants
    for q in m.golden_queries:
        i = detail["eval_texts"].index(q.text)
        assert detail["variants"]["quantized"]["predictions"][i] == q.expected
    # the per-text detail stays in the build directory: published files hold none of it
    assert "predictions.json" not in names
    assert detail["probabilities"]["quantized"][0] and len(detail["eval_texts"]) == len(
        detail["variants"]["onnx"]["predictions"]
    )
    published = (d / "report.json").read_text()
    assert "probabilities" not in report["validate"] and "eval_texts" not in report["validate"]
    assert not any(
        "predictions" in x or "confusion" in x for x in report["validate"]["variants"].values()
    )
    assert detail["eval_texts"][-1] not in published  # a long text: in no published file
    assert report["validate"]["per_text"]["file"] == "predictions.json"


def test_quantized_pickle_loads_with_plain_fastai_in_a_fresh_process(tiny, tmp_path: Path) -> None:
    work, m = tiny
    pkl = work / "artifacts" / "build" / "0.0.1" / "export_quantized.pkl"
    code = """
import json, sys, warnings
warnings.simplefilter("ignore")
from fastai.learner import load_learner
learn = load_learner(sys.argv[1])
texts = json.loads(sys.argv[2])
with learn.no_bar():
    labels = [str(learn.predict(t)[0]) for t in texts]
    # a batch of texts longer than 2 x seq_len: fastai feeds it in non-contiguous slices
    long = json.loads(sys.argv[3])
    batch = learn.get_preds(dl=learn.dls.test_dl(long), reorder=True)[0]
    one = [learn.predict(t)[2].tolist() for t in long]
print(json.dumps({"labels": labels, "pipeline": [k for k in sys.modules if k.split(".")[0] == "pipeline"],
                  "modules": sorted({type(x).__module__ for x in learn.model.modules()}),
                  "tokens": [len(learn.dls.test_dl([t]).one_batch()[0][0]) for t in long],
                  "batch": batch.tolist(), "one": one}))
"""
    texts = [q.text for q in m.golden_queries]
    first = long_eval_texts(work)[0]
    long = [first, first + " Thanks a lot."]  # lengths within seq_len: fastai issue #3379 aside
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(
        [sys.executable, "-c", code, str(pkl), json.dumps(texts), json.dumps(long)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["pipeline"] == []
    assert out["labels"] == [q.expected for q in m.golden_queries]
    assert all(mod.startswith(("torch.", "fastai.")) for mod in out["modules"]), out["modules"]
    assert any("quantized" in mod for mod in out["modules"])
    assert min(out["tokens"]) > 2 * 72
    worst = max(
        abs(a - b)
        for x, y in zip(out["batch"], out["one"], strict=True)
        for a, b in zip(x, y, strict=True)
    )
    assert worst < 0.05, worst  # dynamic INT8 quantizes activations per batch: close, not equal


def test_long_texts_batched_and_one_by_one_agree_on_every_variant(tiny) -> None:
    """Texts over 2 x seq_len, mixed with short ones in one call: the build's batched predictions
    (`predict_all`, what validation scores) equal `learn.predict` one text at a time; the onnx
    variant, which steps through the chunks itself, answers like the original."""
    import numpy as np
    from fastai.learner import load_learner

    from pipeline.client.onnx_model import OnnxClassifier
    from pipeline.dataset import read_labelled_csv
    from pipeline.evaluation import predict_all

    work, m = tiny
    d = work / "artifacts" / "build" / "0.0.1"
    long = long_eval_texts(work)
    assert len(long) == len(m.labels)
    texts = long + list(read_labelled_csv(BUNDLED_EVAL, "text", "label", min_classes=1).texts[:4])
    one_by_one = {}
    for name, tolerance in (("original", 1e-5), ("quantized", 0.05)):
        learn = load_learner(d / (mf.ORIGINAL_FILE if name == "original" else mf.QUANTIZED_FILE))
        assert min(len(learn.dls.test_dl([t]).one_batch()[0][0]) for t in long) > 2 * 72
        batched = predict_all(learn, texts)
        with learn.no_bar():
            one = np.stack([learn.predict(t)[2].numpy() for t in texts])
        one_by_one[name] = one
        # dynamic INT8 quantizes activations per batch: a near tie may flip, nothing else
        assert_close_answers(batched.probs, one, tolerance, name)
    clf = OnnxClassifier(d / mf.ONNX_FILE, d / mf.TOKENIZER_FILE)
    onnx = np.stack([clf.predict(t).probs for t in texts])
    assert_close_answers(onnx, one_by_one["original"], 0.05, "onnx")


def test_quantized_model_has_no_weight_dropout_and_one_embedding(tiny) -> None:
    import torch
    from fastai.learner import load_learner
    from fastai.text.models.awdlstm import EmbeddingDropout, WeightDropout

    work, _ = tiny
    learn = load_learner(work / "artifacts" / "build" / "0.0.1" / "export_quantized.pkl")
    mods = list(learn.model.modules())
    assert not any(isinstance(x, WeightDropout | EmbeddingDropout) for x in mods)
    awd = learn.model[0].module
    # the embedding once, behind a .contiguous() of fastai's slices (fastai + torch classes only)
    assert awd.encoder_dp[1] is awd.encoder and awd.encoder_dp[0].func is torch.Tensor.contiguous
    assert isinstance(awd.encoder, torch.ao.nn.quantized.Embedding)
    assert all(isinstance(r, torch.ao.nn.quantized.dynamic.LSTM) for r in awd.rnns)


def test_published_pickles_carry_no_training_rows(tiny) -> None:
    """fastai's `export` clears the last DataLoader and batch a learner holds (`_end_cleanup`);
    ours must too: after training, `learn.dl` is the validation DataLoader over a DataFrame of
    held-out training rows, and pickling it shipped those texts (594 of the demo's) inside
    export.pkl and export_quantized.pkl, 1.5 MB of the demo's quantized file."""
    import csv

    from fastai.learner import load_learner

    work, _ = tiny
    with (FIXTURES.parents[1] / "pipeline" / "data" / "train.csv").open(
        encoding="utf-8", newline=""
    ) as f:
        texts = [r["text"] for r in csv.DictReader(f) if len(r["text"].split()) >= 4]
    for name in ("export.pkl", "export_quantized.pkl"):
        path = work / "artifacts" / "build" / "0.0.1" / name
        data = path.read_bytes()
        shipped = [t for t in texts if t.encode() in data]
        assert not shipped, f"{name} holds {len(shipped)} training texts, e.g. {shipped[:2]}"
        learn = load_learner(path)
        assert learn.dl is None and learn.xb == (None,) and learn.yb == (None,), name


def test_rebuild_skips_training_and_a_failed_gate_stops_the_release(
    tiny, tmp_path: Path, caplog
) -> None:
    work = fresh_copy(tiny, tmp_path)
    text = (work / "release.toml").read_text().replace("min_accuracy = 0.0", "min_accuracy = 0.999")
    (work / "release.toml").write_text(text)
    with caplog.at_level(logging.INFO, logger="pipeline"), pytest.raises(GateFailed) as e:
        build(cfg.load(work / "release.toml"))
    assert "training: skipped, inputs unchanged" in caplog.text
    # the onnx variant is held to the same accuracy threshold
    assert "2 of 16 gates failed" in str(e.value) and "quantized accuracy" in e.value.table
    assert "What you can do:" in e.value.table and "more (and more varied) training rows" in str(
        e.value
    )
    assert "| onnx accuracy |" in e.value.table
    d = work / "artifacts" / "build" / "0.0.1"
    assert not (d / mf.MANIFEST_NAME).exists()  # nothing publishable
    assert "**FAILED**" in (d / "report.md").read_text()
    # and publishing refuses too: it rebuilds, fails the gate, exits 4, publishes nothing
    proc = release("publish", cwd=work)
    assert proc.returncode == 4, proc.stderr[-2000:]
    assert "| quantized accuracy | >= 99.9% |" in proc.stderr and "**FAIL**" in proc.stderr
    assert not (work / "artifacts" / "releases").exists()


def test_build_from_an_export_pkl_trained_elsewhere(tiny, tmp_path: Path) -> None:
    # a learner uploaded from the machine that trained it, fetched by its pinned location (a
    # local export_pkl builds the same way: tests/integration/test_learner_zoo.py)
    from tests.mirror_server import MirrorServer

    work, _ = tiny
    src = work / "artifacts" / "build" / "0.0.1" / "export.pkl"
    d = tmp_path / "load"
    d.mkdir()
    text = (FIXTURES / "tiny.toml").read_text().replace('train_csv = "bundled:train.csv"\n', "")
    with MirrorServer(src.parent) as server:
        url = f"{server.url}/export.pkl"
        pin = f'export_pkl_blake3 = "{mf.blake3_file(src)}"\nexport_pkl_size = {src.stat().st_size}'
        text = text.replace("[train]\n", f'[train]\nexport_pkl = "{url}"\n{pin}\n')
        (d / "release.toml").write_text(text)
        m = build(cfg.load(d / "release.toml"))
        assert server.count("/export.pkl") == 1
    assert (
        mf.check_file(d / "artifacts" / "build" / "0.0.1" / "export.pkl", m.variant("original"))
        is None
    )
    assert m.variant("original").blake3 == mf.blake3_file(src)
    report = json.loads((d / "artifacts" / "build" / "0.0.1" / "report.json").read_text())
    assert report["validate"]["baseline"] is None and report["train"]["loaded from"] == url
    assert report["train"]["pinned blake3"] == m.variant("original").blake3


def test_export_pkl_that_is_not_a_learner_exits_3(tmp_path: Path) -> None:
    import torch

    bogus = tmp_path / "export.pkl"
    torch.save({"not": "a learner"}, bogus)
    text = (
        (FIXTURES / "tiny.toml")
        .read_text()
        .replace("[train]\n", f'[train]\nexport_pkl = "{bogus}"\n')
    )
    (tmp_path / "release.toml").write_text(text)
    with pytest.raises(InputError, match="expected a fastai Learner, found builtins.dict"):
        build(cfg.load(tmp_path / "release.toml"))
    proc = release("build", cwd=tmp_path)
    assert proc.returncode == 3 and "Traceback" not in proc.stderr
    assert "loading the learner:" in proc.stderr
    (tmp_path / "garbage.pkl").write_bytes(b"\x80\x04not a pickle at all")
    (tmp_path / "release.toml").write_text(text.replace(str(bogus), str(tmp_path / "garbage.pkl")))
    proc = release("build", cwd=tmp_path)
    assert proc.returncode == 3 and "not a loadable fastai export" in proc.stderr


def test_publish_fetch_and_load_end_to_end(tiny, tmp_path: Path) -> None:
    work = fresh_copy(tiny, tmp_path)
    dry = release("publish", "--dry-run", cwd=work)
    assert dry.returncode == 0, dry.stderr[-2000:]
    assert "local: planned" in dry.stdout and "  upload     export_quantized.pkl (" in dry.stdout
    assert not (work / "artifacts" / "releases").exists()
    first = release("publish", cwd=work)
    assert first.returncode == 0, first.stderr[-2000:]
    assert "local: done" in first.stdout
    store = work / "artifacts" / "releases" / "tiny-intent"
    assert (store / "latest").read_text() == "0.0.1\n"
    again = release("publish", cwd=work)
    assert again.returncode == 0 and "local: skipped" in again.stdout
    fetched = release(
        "fetch", "tiny-intent", "--load", "--cache-dir", str(work / "cache"), cwd=work
    )
    assert fetched.returncode == 0, fetched.stderr[-2000:]
    assert fetched.stdout.strip() == str(
        work / "cache" / "tiny-intent" / "0.0.1" / "export_quantized.pkl"
    )
    assert "smoke test" in fetched.stderr and "golden queries passed" in fetched.stderr
    # a different file under the published version is refused
    (store / "0.0.1" / "report.md").write_text("changed by hand\n")
    refused = release("publish", cwd=work)
    assert refused.returncode == 3 and "versions are immutable" in refused.stderr
    assert "bump [model] version in release.toml" in refused.stderr
    # the advice names the config file actually used
    shutil.copy(work / "release.toml", work / "other.toml")
    other = release("--config", "other.toml", "publish", cwd=work)
    assert other.returncode == 3 and "bump [model] version in other.toml" in other.stderr


def test_pretrained_with_unusable_local_weights_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "lstm_fwd.pth").write_bytes(b"not torch")
    (tmp_path / "itos_wt103.pkl").write_bytes(b"not a pickle")
    base = (FIXTURES / "tiny.toml").read_text()
    weights = '[train]\npretrained = true\npretrained_weights = "lstm_fwd.pth"\npretrained_vocab = "itos_wt103.pkl"\n'
    (tmp_path / "release.toml").write_text(base.replace("[train]\n", weights))
    with pytest.raises(
        InputError, match="lstm_fwd.pth is not the state dict of a fastai AWD_LSTM language model"
    ):
        build(cfg.load(tmp_path / "release.toml"))
    proc = release("build", cwd=tmp_path)
    assert proc.returncode == 3, proc.stderr[-2000:]
    assert "is not the state dict of a fastai AWD_LSTM" in proc.stderr
    assert "Traceback" not in proc.stderr
