"""Bounded input on both predict paths of a real (tiny) release (finding 7): texts over the limits
are refused at once with InputTooLarge (a ValueError), adversarial texts within them are answered
in well under a second, and the pickle path tokenizes with the linear port, whose token ids are
fastai's (spaCy's) own on those adversarial texts too."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from pipeline.client import InputLimits, InputTooLarge, LocalSource, load_model
from tests.integration.test_client_load import republish

pytestmark = pytest.mark.slow

# Small enough for spaCy itself to finish quickly, each hitting one of its slow paths.
ADVERSARIAL = {
    "suffixes": ")]" * 150,
    "prefixes": "([" * 150,
    "url user-info": "a:" * 150,
    "apostrophes": "'s" * 150,
    "quotes": "\"'" * 150,
    "emoji": "😀🎉" * 150,
    "dots": "a..b.." * 50,
    "urls": "see http://example.com/a?b=1 and www.test.org/x " * 10,
    "cjk": "日本語のテキスト" * 40,
    "mixed": "Hello, WORLD! it's (e.g.) x@y.com :) #tag a/b " * 10,
}


@pytest.fixture(scope="module")
def store(tiny, tmp_path_factory):
    return republish(tiny, tmp_path_factory.mktemp("bounds"), "plain")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread, as a server running one query at a time should (with two, every
    quantized LSTM call waits for the other thread on a loaded machine)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module", params=["quantized", "onnx"])
def loaded(request, store, tmp_path_factory):
    pytest.importorskip("onnxruntime")
    root, m = store
    return load_model(
        m.model,
        sources=[LocalSource(root)],
        variants=[request.param],
        cache_dir=tmp_path_factory.mktemp("c"),
        input_limits=InputLimits(max_chars=10_000, max_run=1_000, max_tokens=6_000),
    )


def test_over_the_limits_is_refused_at_once(loaded) -> None:
    prose = "where is the credit check done when an order is released? " * 18_000  # ~1 MB
    many = " ".join(")]" * 40 for _ in range(100))  # 8,099 characters, 8,001 tokens
    cases = ((prose, "max_chars"), ("word " + ")]" * 600, "max_run"), (many, "max_tokens"))
    for text, setting in cases:
        start = time.process_time()
        with pytest.raises(InputTooLarge) as e:
            loaded.predict(text)
        assert time.process_time() - start < 0.5
        assert e.value.setting == setting and isinstance(e.value, ValueError)
        assert "raise the limit" in str(e.value)


def test_adversarial_texts_within_the_limits_are_answered_quickly(loaded) -> None:
    # runs of 1,000 characters (the limit), each different so that no tokenizer cache helps,
    # about 5,000 tokens (under the 6,000 allowed)
    for name, unit in (("suffixes", ")]"), ("url user-info", "a:"), ("emoji", "😀🎉")):
        runs = [chr(0x4E00 + i) + (unit * 500)[:999] for i in range(5)]
        text = " ".join(runs)
        assert len(text) <= 10_000
        start = time.process_time()  # CPU time: what an idle core takes (CI machines are shared)
        label, probs = loaded.predict(text)
        elapsed = time.process_time() - start
        assert label in probs and elapsed < 1.0, (name, elapsed)


def test_the_pickle_path_tokenizes_with_the_linear_port_and_gets_fastais_ids(
    store, tmp_path: Path
) -> None:
    root, m = store
    loaded = load_model(
        m.model, sources=[LocalSource(root)], variants=["quantized"], cache_dir=tmp_path / "c"
    )
    predictor = loaded.predictor
    assert predictor is not None and predictor.port is not None
    tok, num = predictor._encode.fs  # fastai's Tokenizer and Numericalize, as learn.predict runs
    for name, text in ADVERSARIAL.items():
        want = [int(x) for x in num(tok(text))]
        assert predictor.encode(text).tolist() == want, name
        assert loaded.predict(text)[0] == str(loaded.learner.predict(text)[0]), name


def test_unknown_words_do_not_grow_the_vocabulary_lookup(store, tmp_path: Path) -> None:
    """fastai's Numericalize.o2i is a defaultdict: each unknown word a server is asked used to
    become a new key, on learn.predict and on the predictor's fastai path alike."""
    import pickle
    from collections import defaultdict

    root, m = store
    loaded = load_model(
        m.model, sources=[LocalSource(root)], variants=["quantized"], cache_dir=tmp_path / "c"
    )
    predictor = loaded.predictor
    assert predictor is not None
    tok, num = predictor._encode.fs
    size = len(num.o2i)
    unknown = [f"zqx{i}word part{i}no{i}" for i in range(50)]
    want = [[int(x) for x in num(tok(t))] for t in unknown]
    predictor._port_state = (None,)  # fastai's transforms, as for a learner the port cannot read
    for text, ids in zip(unknown, want, strict=True):
        assert predictor.encode(text).tolist() == ids
        loaded.predict(text)
        loaded.learner.predict(text)
    assert len(num.o2i) == size
    assert num.o2i["zqx0word"] == num.o2i["xxunk"] and len(num.o2i) == size  # xxunk's id, kept
    # a learner exported after this still pickles a plain defaultdict
    assert type(pickle.loads(pickle.dumps(num.o2i))) is defaultdict


def test_a_learner_the_predictor_refuses_does_not_grow_its_lookup_either(
    store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lookup is fixed where the client loads a learner, not only in the Predictor: when the
    fast path does not apply, predict() is learn.predict, and it must not grow either."""
    from pipeline.client import loading
    from pipeline.client.predict import UnsupportedLearner

    def refuse(*_: object, **__: object) -> None:
        raise UnsupportedLearner("refused for this test")

    monkeypatch.setattr(loading, "Predictor", refuse)
    root, m = store
    loaded = load_model(
        m.model, sources=[LocalSource(root)], variants=["quantized"], cache_dir=tmp_path / "c"
    )
    assert loaded.predictor is None
    num = next(f for f in loaded.learner.dls.valid_ds.tls[0].tfms.fs if hasattr(f, "o2i"))
    size = len(num.o2i)
    for i in range(20):
        loaded.predict(f"zqx{i}word part{i}no{i}")
    assert len(num.o2i) == size
