"""[train] options that change how the classifier learns, checked on a real (tiny) training."""

from __future__ import annotations

import csv
import dataclasses
import logging
from pathlib import Path

import pytest
import torch

from pipeline import config
from pipeline.dataset import read_labelled_csv
from pipeline.quantization import quantize, strip
from pipeline.stages.quantize import export_learner
from pipeline.training import train_classifier

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> tuple[config.ReleaseConfig, object, Path]:
    work = tmp_path_factory.mktemp("options")
    with (ROOT / "pipeline" / "data" / "train.csv").open(encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))
    with (work / "train.csv").open("w", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows([rows[0], *rows[1::10]])
    toml = (FIXTURES / "tiny.toml").read_text().replace('"bundled:train.csv"', '"train.csv"')
    (work / "release.toml").write_text(toml)
    c = config.load(work / "release.toml")
    train = read_labelled_csv(c.data.train_csv, c.data.text_column, c.data.label_column)
    return c, train, work


def _train(setup, tmp: Path, **changes):
    c, train, _ = setup
    c = dataclasses.replace(c, train=dataclasses.replace(c.train, **changes))
    return train_classifier(c, train, tmp)


def _weights(learn) -> list[torch.Tensor]:
    return [p.detach().clone() for p in learn.model.parameters()]


def test_valid_pct_zero_trains_on_every_row(setup, tmp_path: Path, caplog) -> None:
    _, train, _ = setup
    with caplog.at_level(logging.INFO, logger="pipeline.train"):
        learn = _train(setup, tmp_path, valid_pct=0.0, lm_epochs=1, label_smoothing=0.1)
    assert len(learn.dls.train_ds) == len(train.texts)
    assert len(learn.dls.valid_ds) == 0
    epochs = [r.getMessage() for r in caplog.records if "epoch 1/1" in r.getMessage()]
    assert len(epochs) == 2, epochs  # the language model, then the classifier
    assert all("train_loss" in m and "None" not in m for m in epochs), epochs
    # the build's next stages take it as they take any learner, straight after training (this
    # deepcopy used to fail: without a validation pass the last training batch's loss and
    # RNNCallback's outputs kept their autograd graph; a predict first would have hidden it)
    quantized = quantize(strip(learn), ("lstm", "linear", "embedding"))
    export_learner(learn, tmp_path / "export.pkl")
    export_learner(quantized, tmp_path / "export_quantized.pkl")
    label, _, probs = learn.predict("how do I add a field to the customer card")
    assert str(label) in train.classes and len(probs) == len(train.classes)
    assert str(quantized.predict("how do I add a field to the customer card")[0]) == str(label)


def test_word_dropout_is_set_exactly_and_changes_training(setup, tmp_path: Path) -> None:
    plain = _train(setup, tmp_path / "plain")
    dropped = _train(setup, tmp_path / "dropped", word_dropout=0.3)
    # fastai's default: embed_p 0.05 scaled by drop_mult; word_dropout is not scaled
    assert plain.model[0].module.encoder_dp.embed_p == pytest.approx(0.05 * 0.3)
    assert dropped.model[0].module.encoder_dp.embed_p == 0.3
    a, b = _weights(plain), _weights(dropped)
    assert any(not torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_ema_decay_leaves_the_moving_average_of_the_steps_weights() -> None:
    from fastai.callback.core import Callback
    from fastai.test_utils import synth_learner

    from pipeline.training_callbacks import weight_average_callback

    seen: list[dict[str, torch.Tensor]] = []

    class Record(Callback):
        order = 90  # after the optimizer step, before the average's update

        def before_fit(self) -> None:
            seen.append({k: v.clone() for k, v in self.learn.model.state_dict().items()})

        def after_batch(self) -> None:
            if self.training:
                seen.append({k: v.clone() for k, v in self.learn.model.state_dict().items()})

    learn = synth_learner(n_trn=4, lr=0.1)
    learn.fit(2, cbs=[Record(), weight_average_callback(0.9)])
    assert len(seen) == 1 + 2 * 4  # the start, then 4 batches x 2 epochs
    expected = dict(seen[0])
    for step, w in enumerate(seen[1:], start=1):
        d = min(0.9, (1 + step) / (10 + step))
        expected = {k: d * expected[k] + (1 - d) * w[k] for k in w}
    final = learn.model.state_dict()
    for k, v in expected.items():
        assert torch.allclose(final[k], v, atol=1e-6), k
        assert not torch.allclose(final[k], seen[-1][k])  # not the last step's weights


def test_ema_decay_trains_a_classifier_the_build_can_quantize(
    setup, tmp_path: Path, caplog
) -> None:
    plain = _train(setup, tmp_path / "plain")
    with caplog.at_level(logging.INFO, logger="pipeline.train"):
        averaged = _train(setup, tmp_path / "avg", ema_decay=0.99)
    assert any("moving average of" in r.getMessage() for r in caplog.records)
    a, b = _weights(plain), _weights(averaged)
    assert any(not torch.equal(x, y) for x, y in zip(a, b, strict=True))
    quantized = quantize(strip(averaged), ("lstm", "linear", "embedding"))
    export_learner(averaged, tmp_path / "export.pkl")
    text = "how do I add a field to the customer card"
    assert str(quantized.predict(text)[0]) == str(averaged.predict(text)[0])


def test_phrasing_words_are_frequent_and_spread_over_the_classes() -> None:
    from pipeline.training_callbacks import phrasing_words

    # token 2 is special, 10 is in every text of both classes, 11 only in class 0, 12 in both
    # classes but in 1 text of 100 (under min_share), 13 in 3 of class 0's and 1 of class 1's
    texts = [[2, 10, 11] if i < 50 else [2, 10, 14] for i in range(100)]
    texts[0] = [*texts[0], 12]
    for i in (1, 2, 3, 60):
        texts[i] = [*texts[i], 13]
    labels = [0 if i < 50 else 1 for i in range(100)]
    assert phrasing_words(texts, labels, 2, exclude={2}, min_share=0.02) == [10]
    assert phrasing_words(texts, labels, 2, exclude=set(), min_share=0.02) == [2, 10]


def test_phrase_dropout_removes_the_words_from_picked_texts_and_repads() -> None:
    from types import SimpleNamespace

    from fastai.text.data import TensorText, pad_chunk

    from pipeline.training_callbacks import phrase_dropout_callback

    pad = 1
    texts = [torch.tensor([2, 10, 20, 10, 21]), torch.tensor([2, 22]), torch.tensor([2, 10])]
    x = TensorText(torch.stack([pad_chunk(t, pad_idx=pad, seq_len=4, pad_len=5) for t in texts]))
    cb = phrase_dropout_callback(1.0, [10], pad, seq_len=4)
    cb.learn = SimpleNamespace(xb=(x,), training=True)
    cb.before_batch()
    out = cb.learn.xb[0]
    assert isinstance(out, TensorText) and out.shape == x.shape
    expected = [torch.tensor([2, 20, 21]), texts[1], texts[2]]  # xxbos alone: left as it was
    for row, want in zip(out, expected, strict=True):
        assert torch.equal(row[row != pad], want)
        assert torch.equal(row, pad_chunk(want, pad_idx=pad, seq_len=4, pad_len=5))
    # not in validation, and p = 0 picks nothing
    cb.learn = SimpleNamespace(xb=(x,), training=False)
    cb.before_batch()
    assert cb.learn.xb[0] is x
    cb0 = phrase_dropout_callback(0.0, [10], pad, seq_len=4)
    cb0.learn = SimpleNamespace(xb=(x,), training=True)
    cb0.before_batch()
    assert cb0.learn.xb[0] is x


def test_phrase_dropout_trains_and_names_its_words(setup, tmp_path: Path, caplog) -> None:
    plain = _train(setup, tmp_path / "plain")
    with caplog.at_level(logging.INFO, logger="pipeline.train"):
        dropped = _train(setup, tmp_path / "phrase", phrase_dropout=0.5)
    msg = next(r.getMessage() for r in caplog.records if "phrase dropout" in r.getMessage())
    assert "(the " in msg and "xxbos" not in msg, msg
    a, b = _weights(plain), _weights(dropped)
    assert any(not torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_unk_dropout_shows_words_as_xxunk_but_never_special_tokens() -> None:
    from types import SimpleNamespace

    from fastai.text.data import TensorText

    from pipeline.training_callbacks import unk_dropout_callback

    unk, pad, bos = 0, 1, 2
    x = TensorText(torch.tensor([[bos, 10, 11, 12, 13], [bos, 14, 15, pad, pad]]))
    cb = unk_dropout_callback(1.0, unk, [pad, bos])
    cb.learn = SimpleNamespace(xb=(x,), training=True)
    cb.before_batch()
    out = cb.learn.xb[0]
    assert isinstance(out, TensorText)
    assert out.tolist() == [[bos, unk, unk, unk, unk], [bos, unk, unk, pad, pad]]
    assert x.tolist()[0] == [bos, 10, 11, 12, 13]  # the batch's tensor is not changed in place
    # a share of the words, not all of them
    torch.manual_seed(0)
    many = TensorText(torch.arange(10, 2010).reshape(4, 500))
    cb = unk_dropout_callback(0.1, unk, [pad, bos])
    cb.learn = SimpleNamespace(xb=(many,), training=True)
    cb.before_batch()
    share = (cb.learn.xb[0] == unk).float().mean().item()
    assert 0.07 < share < 0.13, share
    # not in validation, and p = 0 changes nothing
    cb.learn = SimpleNamespace(xb=(x,), training=False)
    cb.before_batch()
    assert cb.learn.xb[0] is x
    cb0 = unk_dropout_callback(0.0, unk, [pad, bos])
    cb0.learn = SimpleNamespace(xb=(x,), training=True)
    cb0.before_batch()
    assert cb0.learn.xb[0] is x


def test_unk_dropout_trains_the_unknown_words_embedding(setup, tmp_path: Path) -> None:
    # without it no training text holds xxunk (min_freq = 1), so its row keeps its random start
    # (only weight decay shrinks it) and an unseen word at prediction time adds noise; with it
    # the row is learned
    plain = _train(setup, tmp_path / "plain")
    dropped = _train(setup, tmp_path / "unk", unk_dropout=0.2)
    unk = plain.dls.vocab[0].index("xxunk")
    assert dropped.dls.vocab[0].index("xxunk") == unk
    start = _train(setup, tmp_path / "none", epochs=1, lr=1e-9)
    row = lambda learn: learn.model[0].module.encoder.weight[unk].detach()  # noqa: E731
    decayed = (row(plain) - row(start)).abs().max().item()
    learned = (row(dropped) - row(start)).abs().max().item()
    assert decayed < 1e-3 and learned > 10 * decayed, (decayed, learned)


def test_subword_tokenizer_trains_drops_whole_word_pieces_and_exports_alone(
    setup, tmp_path: Path, caplog
) -> None:
    import shutil

    from fastai.learner import load_learner
    from fastai.text.core import SentencePieceTokenizer

    from pipeline.evaluation import predict_all

    work = tmp_path / "work"
    with caplog.at_level(logging.INFO, logger="pipeline.train"):
        learn = _train(setup, work, tokenizer="subwords", phrase_dropout=0.5, unk_dropout=0.1)
    from pipeline.client.learner_spec import tokenizer_transforms

    assert isinstance(tokenizer_transforms(learn)[0].tok, SentencePieceTokenizer)
    msg = next(r.getMessage() for r in caplog.records if "phrase dropout" in r.getMessage())
    words = msg.split("(", 1)[1].rstrip(")").split()
    assert "▁the" in words and all(w.startswith("▁") and "xx" not in w for w in words), msg
    # the pickle carries the SentencePiece model: it predicts with the training folder gone
    quantized = quantize(strip(learn), ("lstm", "linear", "embedding"))
    export_learner(quantized, tmp_path / "export_quantized.pkl")
    shutil.rmtree(work)
    loaded = load_learner(tmp_path / "export_quantized.pkl")
    texts = ["relaionship between the equipmnt and its spare parts", "colour the late rows red"]
    assert predict_all(loaded, texts).labels == predict_all(quantized, texts).labels


def test_subword_tokenizer_without_sentencepiece_is_one_clear_error(
    setup, tmp_path: Path, monkeypatch
) -> None:
    import importlib.util

    from pipeline.errors import InputError

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n == "sentencepiece" else real(n, *a)
    )
    with pytest.raises(InputError, match="needs the sentencepiece package: pip install"):
        _train(setup, tmp_path, tokenizer="subwords")
    assert not (tmp_path / "spm").exists()  # refused before any work


def test_typo_aliases_read_a_misspelled_common_word_as_the_word(setup, tmp_path: Path) -> None:
    from fastai.learner import load_learner

    from pipeline import typo_aliases
    from pipeline.client.learner_spec import tokenizer_spec
    from pipeline.client.tokenizer import TextTokenizer

    learn = _train(setup, tmp_path, typo_aliases=True)
    num = typo_aliases.numericalize_of(learn)
    itos = [str(w) for w in num.vocab]
    right, wrong = (
        "how do i add a field to the customer card",
        "how do i add a field to the cusotmer card",
    )
    export_learner(learn, tmp_path / "export.pkl")
    export_learner(quantize(strip(learn), ("lstm", "linear", "embedding")), tmp_path / "q.pkl")
    for path in (tmp_path / "export.pkl", tmp_path / "q.pkl"):
        plain = load_learner(path)  # plain fastai: the aliases are data in the pickle
        with plain.no_bar():
            a, b = plain.predict(right), plain.predict(wrong)
        assert torch.equal(a[2], b[2]), path.name
        ids = plain.dls.test_dl([wrong]).one_batch()[0][0].tolist()
        assert itos[ids[-2]] == "customer"
    # the onnx variant's tokenizer file carries the same map, so it gives fastai's ids
    spec = tokenizer_spec(learn)
    assert spec["format_version"] == 2 and spec["aliases"]["cusotmer"] == itos.index("customer")
    port = TextTokenizer(spec)
    for text in (right, wrong, "Cusotmer carrd fiedl xyzzy"):
        assert port.ids(text) == learn.dls.test_dl([text]).one_batch()[0][0].tolist()
    # a word fastai was once asked and did not know (a lookup mapped to xxunk) does not shadow
    # the alias when the aliases are rebuilt
    num.o2i["custmer"] = num.o2i.default_factory()
    n = typo_aliases.add_to_learner(learn, (x for x, _ in learn.dls.train_ds), 3)
    assert n == len(spec["aliases"]) and num.o2i["custmer"] == itos.index("customer")


def test_typo_aliases_are_refused_with_subwords_or_a_loaded_learner(tmp_path: Path) -> None:
    from pipeline.errors import ConfigError

    (tmp_path / "export.pkl").write_bytes(b"not read at config load")
    for extra, key, why in (
        (
            'tokenizer = "subwords"\ntypo_aliases = true',
            "typo_aliases",
            "false with train.tokenizer",
        ),
        (
            'export_pkl = "export.pkl"\ntypo_aliases = true',
            "typo_aliases",
            "false with train.export_pkl",
        ),
        (
            'export_pkl = "export.pkl"\ncase_markers = false',
            "case_markers",
            "true with train.export_pkl",
        ),
    ):
        toml = (FIXTURES / "tiny.toml").read_text()
        toml = toml.replace("[train]", f"[train]\n{extra}", 1)
        (tmp_path / "release.toml").write_text(toml)
        with pytest.raises(ConfigError, match=f"train.{key}: expected {why}"):
            config.load(tmp_path / "release.toml")


def test_case_markers_false_makes_case_unable_to_change_an_answer(setup, tmp_path: Path) -> None:
    from fastai.learner import load_learner
    from fastai.text.core import replace_all_caps, replace_maj

    from pipeline.client.learner_spec import tokenizer_spec, tokenizer_transforms
    from pipeline.client.tokenizer import TextTokenizer

    learn = _train(setup, tmp_path, case_markers=False)
    texts = (
        "how do i add a field to the customer card",
        "How Do I Add A Field To The Customer Card",
        "HOW DO I ADD A FIELD TO THE CUSTOMER CARD",
        "hOW dO i ADD a FiElD to THE customer CARD",
    )
    ids = [learn.dls.test_dl([t]).one_batch()[0][0].tolist() for t in texts]
    itos = [str(w) for w in learn.dls.vocab[0]]
    assert all(x == ids[0] for x in ids) and "xxmaj" not in [itos[i] for i in ids[0]]
    export_learner(quantize(strip(learn), ("lstm", "linear", "embedding")), tmp_path / "q.pkl")
    plain = load_learner(tmp_path / "q.pkl")  # fastai's own rules, pickled by reference
    rules = tokenizer_transforms(plain)[0].rules
    assert replace_maj not in rules and replace_all_caps not in rules and len(rules) == 6
    with plain.no_bar():
        probs = [plain.predict(t)[2] for t in texts]
    assert all(torch.equal(p, probs[0]) for p in probs)
    # the onnx variant's tokenizer file lists the same rules, so the client gives fastai's ids
    port = TextTokenizer(tokenizer_spec(learn))
    for t in (*texts, "The ERP's 'Sales Order' screen!!!"):
        assert port.ids(t) == learn.dls.test_dl([t]).one_batch()[0][0].tolist()


def test_case_markers_default_keeps_fastais_rules(setup, tmp_path: Path) -> None:
    from fastai.text.core import defaults

    from pipeline.client.learner_spec import tokenizer_transforms

    learn = _train(setup, tmp_path)
    assert tokenizer_transforms(learn)[0].rules == defaults.text_proc_rules
    ids = learn.dls.test_dl(["Customer Card"]).one_batch()[0][0].tolist()
    assert "xxmaj" in [str(learn.dls.vocab[0][i]) for i in ids]
