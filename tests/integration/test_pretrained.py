"""Pretrained AWD_LSTM weights: from local files (fastai's `pretrained_fnames` pair), or WT103.

No real WT103 is reachable here, so the test makes a tiny synthetic "pretrained" pair: the
state dict of a fastai AWD_LSTM language model and its vocabulary, saved the way fastai saves
WT103 (`lstm_fwd.pth`, `itos_wt103.pkl`).
"""

from __future__ import annotations

import dataclasses
import pickle
from pathlib import Path

import pytest

from pipeline import config as cfg
from pipeline.dataset import read_labelled_csv
from pipeline.errors import InputError
from pipeline.pretrained import pretrained_shape
from pipeline.training import train_classifier

pytestmark = pytest.mark.slow
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
ROWS = [
    ("how is the price calculated", "logic"),
    ("how is the discount computed on an order", "logic"),
    ("which method sets the due date", "logic"),
    ("where is the tax computed", "logic"),
    ("list of open orders", "data"),
    ("query for the order lines", "data"),
    ("report of invoices per customer", "data"),
    ("sql for the stock per site", "data"),
]


def synthetic_pretrained(
    directory: Path, emb_sz: int, n_hid: int, n_layers: int
) -> tuple[Path, Path]:
    """A tiny random AWD_LSTM language model saved as fastai saves WT103."""
    import torch
    from fastai.text.core import defaults
    from fastai.text.models.awdlstm import AWD_LSTM, awd_lstm_lm_config
    from fastai.text.models.core import get_language_model

    itos = [*defaults.text_spec_tok, "how", "is", "the", "order", "price", "zebra"]
    itos += [f"xxfake{i}" for i in range(8 - len(itos) % 8)]
    torch.manual_seed(0)
    model = get_language_model(
        AWD_LSTM,
        len(itos),
        config={**awd_lstm_lm_config, "emb_sz": emb_sz, "n_hid": n_hid, "n_layers": n_layers},
    )
    weights, vocab = directory / "lstm_fwd.pth", directory / "itos_wt103.pkl"
    torch.save(model.state_dict(), weights)
    vocab.write_bytes(pickle.dumps(itos))
    return weights, vocab


def config_for(tmp_path: Path, train_block: str) -> cfg.ReleaseConfig:
    (tmp_path / "train.csv").write_text("text,label\n" + "".join(f"{t},{y}\n" for t, y in ROWS))
    (tmp_path / "eval.csv").write_text("text,label\nhow is the margin computed,logic\n")
    text = (FIXTURES / "tiny.toml").read_text()
    text = text.replace('"bundled:train.csv"', '"train.csv"').replace(
        '"bundled:eval.csv"', '"eval.csv"'
    )
    text = text.replace("[train]\n", "[train]\n" + train_block)
    (tmp_path / "release.toml").write_text(text)
    return cfg.load(tmp_path / "release.toml")


def train(c: cfg.ReleaseConfig, tmp_path: Path):  # noqa: ANN201
    data = read_labelled_csv(c.data.train_csv, "text", "label")
    return train_classifier(c, data, tmp_path / "work")


def test_local_pretrained_weights_start_the_classifier(tmp_path: Path) -> None:
    import torch

    weights, vocab = synthetic_pretrained(tmp_path, 16, 24, 2)
    assert pretrained_shape(weights) == (16, 24, 2)
    block = 'pretrained = true\npretrained_weights = "lstm_fwd.pth"\npretrained_vocab = "itos_wt103.pkl"\n'
    c = config_for(tmp_path, block)
    # a learning rate this small leaves the weights where the pretrained files put them
    c = dataclasses.replace(c, train=dataclasses.replace(c.train, lr=1e-7, valid_pct=0.25))
    learn = train(c, tmp_path)
    saved = torch.load(weights, weights_only=True)
    enc = learn.model[0].module
    got = enc.rnns[0].weight_hh_l0_raw.detach()
    assert torch.allclose(got, saved["0.rnns.0.weight_hh_l0_raw"], atol=1e-4)
    # the embedding rows follow the words, not the positions (fastai's match_embeds)
    itos = pickle.loads(vocab.read_bytes())
    new_vocab = list(learn.dls.vocab[0])
    for word in ("how", "order", "price"):
        row = enc.encoder.weight[new_vocab.index(word)].detach()
        assert torch.allclose(row, saved["0.encoder.weight"][itos.index(word)], atol=1e-4)
    # and every parameter trains (fastai leaves a loaded encoder frozen)
    assert all(p.requires_grad for p in learn.model.parameters())


def test_pretrained_weights_of_another_shape_are_a_clear_error(tmp_path: Path) -> None:
    synthetic_pretrained(tmp_path, 8, 12, 3)
    block = 'pretrained = true\npretrained_weights = "lstm_fwd.pth"\npretrained_vocab = "itos_wt103.pkl"\n'
    c = config_for(tmp_path, block)
    with pytest.raises(
        InputError,
        match=r"lstm_fwd.pth holds an AWD_LSTM with emb_sz=8, n_hid=12, n_layers=3; "
        r"the config asks for 16, 24, 2: set train.emb_sz",
    ):
        train(c, tmp_path)


def test_pretrained_without_files_offline_says_how_to_give_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # fastai's own download of WT103, with every request sent to a closed local port (nothing
    # leaves the machine) and an empty fastai home (no cached copy)
    monkeypatch.setenv("FASTAI_HOME", str(tmp_path / "fastai-home"))
    for var in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    c = config_for(tmp_path, "pretrained = true\n")
    c = dataclasses.replace(
        c, train=dataclasses.replace(c.train, emb_sz=400, n_hid=1152, n_layers=3)
    )
    with pytest.raises(InputError) as e:
        train(c, tmp_path)
    message = str(e.value)
    assert "the WT103 weights could not be downloaded from https://" in message
    assert "set train.pretrained_weights and train.pretrained_vocab" in message


def test_local_files_need_pretrained_true(tmp_path: Path) -> None:
    synthetic_pretrained(tmp_path, 16, 24, 2)
    with pytest.raises(cfg.ConfigError) as e:
        config_for(
            tmp_path, 'pretrained_weights = "lstm_fwd.pth"\npretrained_vocab = "itos_wt103.pkl"\n'
        )
    assert "train.pretrained: expected true when train.pretrained_weights" in "\n".join(
        e.value.problems
    )
