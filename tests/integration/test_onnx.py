"""The onnx variant of the tiny release against fastai: token ids, any sequence length, a server
without torch, and the build's parity gate."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from pipeline import config as cfg
from pipeline.client.limits import InputLimits
from pipeline.client.onnx_model import OnnxClassifier
from pipeline.client.tokenizer import RULES, Chunking, TextTokenizer
from pipeline.dataset import read_labelled_csv
from pipeline.errors import GateFailed
from pipeline.manifest import ONNX_FILE, TOKENIZER_FILE
from tests.helpers import run_python
from tests.unit.test_tokenizer import CURATED, fuzz_texts

pytestmark = pytest.mark.slow
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


@pytest.fixture(scope="module")
def tiny_onnx(tiny, tmp_path_factory):
    """The tiny build's learner, its tokenizer file, and an fp32 graph exported from it."""
    from pipeline.learner_file import load_exported
    from pipeline.onnx_export import export_fp32
    from pipeline.quantization import strip

    work, manifest = tiny
    d = work / "artifacts" / "build" / "0.0.1"
    learn = load_exported(d / "export.pkl")
    fp32 = export_fp32(strip(learn), tmp_path_factory.mktemp("fp32") / "model_fp32.onnx")
    unlimited = InputLimits.unlimited()  # texts of up to 1,500 tokens below
    return d, manifest, learn, TextTokenizer.from_file(d / TOKENIZER_FILE, limits=unlimited), fp32


def test_token_ids_from_the_release_file_are_fastais(tiny_onnx) -> None:
    from pipeline.onnx_export import reference_ids

    d, _, learn, tok, _ = tiny_onnx
    c = cfg.load(FIXTURES / "tiny.toml")
    texts = [
        *read_labelled_csv(c.data.train_csv, "text", "label").texts,
        *read_labelled_csv(c.data.eval_csv, "text", "label", min_classes=1).texts,
        *CURATED,
        *fuzz_texts(1, 400, list(tok.spec["tokenizer"]["special_cases"])),
    ]
    want = reference_ids(learn, texts)
    bad = [(t, w) for t, w in zip(texts, want, strict=True) if tok.ids(t) != w]
    assert not bad, bad[:3]
    assert len(texts) > 3300
    # the reference is what learn.predict feeds the model (fastai's test_dl for one text)
    for t in texts[:3] + CURATED[3:6]:
        batch = learn.dls.test_dl([t], num_workers=0).one_batch()[0]
        assert batch[0].tolist() == tok.ids(t)


def test_fastai_rules_are_reproduced_exactly() -> None:
    import fastai.text.core as fc

    texts = CURATED + [
        "WHY is THE Order  SLOW???   Soooo slow!!!!",
        "the the the the end, word word word. Hi HI hi",
        "a&amp;b #39;s <br /> \\n nbsp; quot;x quot; ... <unk> 5 @.@ 3 well @-@ known",
        "C# and F# / paths\\here #hashtag",
        "I AM OK. Ok? o.K. X Y Z",
    ]
    for name, mine in RULES.items():
        theirs = getattr(fc, name)
        for t in texts:
            assert mine(t) == theirs(t), (name, t)


def _text_of(tok: TextTokenizer, n: int) -> str:
    """A text of exactly `n` tokens (xxbos included) from single-token vocabulary words."""
    words = [w for w in tok.vocab[9:200] if w.isalpha() and tok.tokens(w) == ["xxbos", w]]
    text = " ".join(words[i % len(words)] for i in range(n - 1))
    assert len(tok.ids(text)) == n
    return text


def test_any_sequence_length_gives_fastais_probabilities(tiny_onnx) -> None:
    d, _, learn, tok, fp32 = tiny_onnx
    exact = OnnxClassifier(fp32, tok)
    int8 = OnnxClassifier(
        d / ONNX_FILE, TextTokenizer.from_file(d / TOKENIZER_FILE, limits=tok.limits)
    )
    assert tok.chunking == Chunking(72, 1440)
    with learn.no_bar():
        # 71/72/73: one chunk, exactly one, one more; 500: 7 chunks; 1500: the first chunks
        # fall outside fastai's max_len and must be left out of the pooling
        for n in (1, 71, 72, 73, 500, 1500):
            text = _text_of(tok, n)
            want = learn.predict(text)[2].numpy()
            assert np.abs(exact.predict(text).probs - want).max() < 2e-6, n
            # INT8 on this 16/24-unit network after one epoch: 0.004-0.026 measured (the most at
            # 1,500 tokens, 21 chunks of rounding); the fp32 graph above checks the chunking itself
            assert np.abs(int8.predict(text).probs - want).max() < 0.05, n
        # pooling over every chunk would have been measurably wrong for the 1500-token text
        exact.tokenizer = TextTokenizer(
            {**tok.spec, "chunking": {"bptt": 72, "max_len": None}}, "no max_len", limits=tok.limits
        )
        assert np.abs(exact.predict(text).probs - want).max() > 1e-4


_NO_TORCH = r"""
import importlib.abc, json, pickle, sys

class Block(importlib.abc.MetaPathFinder):
    # a server with `pip install fastai-release[onnx]`: no torch, no fastai, no spaCy
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "fastai", "spacy", "fastcore"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, Block())

def refuse(*a, **k):
    raise AssertionError("something tried to unpickle")

pickle.load = pickle.loads = refuse
pickle.Unpickler = refuse

from pipeline.client import LocalSource, fetching, load_model

loaded = load_model("tiny-intent", sources=[LocalSource(sys.argv[1])], cache_dir=sys.argv[2])
label, probs = loaded.predict(sys.argv[3])
print(json.dumps({
    "defaults": fetching.default_variants(),
    "variant": loaded.variant,
    "files": sorted(p.name for p in (loaded.fetched.path, *loaded.fetched.companions)),
    "smoke": loaded.smoke_passed,
    "label": label,
    "labels": sorted(probs),
    "sum": sum(probs.values()),
    "loaded": sorted({m.split(".")[0] for m in sys.modules} & {"torch", "fastai", "spacy", "fastcore"}),
}))
"""


def test_a_server_without_torch_loads_the_onnx_variant_and_unpickles_nothing(
    tiny, tmp_path: Path
) -> None:
    work, m = tiny
    store = tmp_path / "store" / "tiny-intent"
    shutil.copytree(work / "artifacts" / "build" / "0.0.1", store / "0.0.1")
    (store / "latest").write_text("0.0.1\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "RELEASE_OFFLINE")}
    proc = run_python(
        "-c",
        _NO_TORCH,
        str(tmp_path / "store"),
        str(tmp_path / "cache"),
        "hi",
        cwd=tmp_path,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["defaults"] == ["onnx", "quantized", "original"]
    assert out["variant"] == "onnx" and out["files"] == [ONNX_FILE, TOKENIZER_FILE]
    assert out["smoke"] == len(m.golden_queries) > 0
    assert out["labels"] == sorted(m.labels) and out["label"] in m.labels
    assert abs(out["sum"] - 1) < 1e-5
    assert out["loaded"] == []
    # and from the command line
    cli = run_python(
        *["-m", "pipeline", "fetch", "tiny-intent", "--variant", "onnx", "--load"],
        *["--source", str(tmp_path / "store"), "--cache-dir", str(tmp_path / "cli-cache")],
        cwd=tmp_path,
        env=env,
    )
    assert cli.returncode == 0, cli.stderr[-3000:]
    assert cli.stdout.strip().endswith(ONNX_FILE) and "onnx variant" in cli.stderr


def test_a_token_id_mismatch_fails_the_export_stage(tiny, tmp_path: Path, monkeypatch) -> None:
    from pipeline.learner_file import load_exported
    from pipeline.quantization import strip
    from pipeline.stages.base import BuildContext
    from pipeline.stages.onnx import ExportOnnx

    work, _ = tiny
    config = cfg.load(FIXTURES / "tiny.toml")
    d = config.data
    learn = load_exported(work / "artifacts" / "build" / "0.0.1" / "export.pkl")
    ctx = BuildContext(config=config, build_dir=tmp_path / "build", learner=learn)
    ctx.build_dir.mkdir()
    ctx.stripped = strip(learn)
    ctx.train_data = read_labelled_csv(d.train_csv, d.text_column, d.label_column)
    ctx.eval_data = read_labelled_csv(d.eval_csv, d.text_column, d.label_column, min_classes=1)
    # a client whose xxmaj rule drifted from fastai's: every text with a capitalised word differs
    monkeypatch.setitem(RULES, "replace_maj", lambda t: t)
    with pytest.raises(GateFailed) as e:
        ExportOnnx().run(ctx)
    msg = str(e.value)
    assert e.value.exit_code == 4 and "token-id parity" in msg and "First differences" in msg
    listed = [line for line in msg.splitlines() if line.startswith("  - ")]
    assert len(listed) == 10 and "fastai ['xxmaj'" in listed[0]
    assert ctx.results["onnx"]["token_parity"]["eval"]["identical"] < 343
    assert (
        not (ctx.build_dir / ONNX_FILE).exists() and not (ctx.build_dir / TOKENIZER_FILE).exists()
    )
