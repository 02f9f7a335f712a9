"""A zoo of tiny fastai text learners made the ways users make them (plain fastai, no pipeline).

Each factory trains a learner in a few seconds on a small three-class dataset and exports it.
The tests release each one, or check that it is refused before any long work with a reason.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

LABELS = ("billing", "shipping", "returns")
_WORDS = {
    "billing": [
        "invoice",
        "charge",
        "card",
        "refund of the fee",
        "payment",
        "bill",
        "tax",
        "receipt",
        "credit",
        "subscription price",
    ],
    "shipping": [
        "parcel",
        "delivery",
        "courier",
        "tracking number",
        "package",
        "shipment",
        "dispatch",
        "truck",
        "warehouse",
        "postcode",
    ],
    "returns": [
        "return label",
        "exchange",
        "broken item",
        "wrong size",
        "send it back",
        "faulty unit",
        "return window",
        "replacement",
        "damaged box",
        "swap",
    ],
}
_FRAMES = [
    "why is my {w} wrong",
    "question about the {w} please",
    "i need help with a {w}",
    "where can i see the {w}",
    "the {w} has a problem again",
    "can you check my {w} today",
    "what happened to my {w}",
    "{w} issue, urgent",
]


def dataset(seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train (150 rows) and eval (30 short rows, then one long row per class: see `long_texts`)
    frames with `text`, `label`; no text in both.

    One row in three names a case number seen once, so min_freq 1 and 3 give other vocabularies.
    """
    rng = random.Random(seed)
    rows = [
        (f.format(w=w) + (f" case {rng.randint(1000, 9999)}" if rng.random() < 0.33 else ""), label)
        for label, words in _WORDS.items()
        for w in words
        for f in _FRAMES
    ]
    rows = sorted(set(rows))
    rng.shuffle(rows)
    train, eval_, seen = [], [], set()
    per_class = {k: 0 for k in LABELS}
    for text, label in rows:
        if text in seen:
            continue
        seen.add(text)
        if per_class[label] < 10:
            per_class[label] += 1
            eval_.append((text, label))
        else:
            train.append((text, label))
    texts, labels = zip(*eval_, strict=True)
    return (
        pd.DataFrame(train[:150], columns=["text", "label"]),
        pd.DataFrame(eval_ + long_texts(texts, labels), columns=["text", "label"]),
    )


def _fit(learn: Any, epochs: int = 1) -> Any:
    with learn.no_bar(), learn.no_logging():
        learn.fit_one_cycle(epochs, 1e-2)
    return learn


def _small(**kw: Any) -> dict[str, Any]:
    from fastai.text.models.awdlstm import awd_lstm_clas_config

    return {**awd_lstm_clas_config, "emb_sz": 16, "n_hid": 24, "n_layers": 2, **kw}


def _dls_from_df(df: pd.DataFrame, work: Path, **kw: Any) -> Any:
    """TextDataLoaders.from_df on the text and label columns: a fifth held out, batches of 16."""
    from fastai.text.all import TextDataLoaders

    return TextDataLoaders.from_df(
        df,
        path=work,
        text_col="text",
        label_col="label",
        valid_pct=0.2,
        seed=1,
        bs=16,
        num_workers=0,
        **kw,
    )


def _dls_from_block(
    df: pd.DataFrame, work: Path, text_block: Any, y_block: Any = None, **label: Any
) -> Any:
    """A DataBlock of `text_block` and `y_block` (default CategoryBlock) on the text and label
    columns (`label`: ColReader's options): a fifth held out, batches of 16."""
    from fastai.text.all import CategoryBlock, ColReader, DataBlock, RandomSplitter

    block = DataBlock(
        blocks=(text_block, y_block or CategoryBlock),
        get_x=ColReader("text"),
        get_y=ColReader("label", **label),
        splitter=RandomSplitter(0.2, seed=1),
    )
    return block.dataloaders(df, bs=16, num_workers=0, path=work)


def _awd_lstm(dls: Any, learner: dict[str, Any] | None = None, **cfg: Any) -> Any:
    """text_classifier_learner on AWD_LSTM, untrained weights, `_small(**cfg)`; fitted.
    `learner`: more of text_classifier_learner's arguments."""
    from fastai.text.all import AWD_LSTM, text_classifier_learner

    config = _small(**cfg)
    return _fit(
        text_classifier_learner(dls, AWD_LSTM, pretrained=False, config=config, **(learner or {}))
    )


def from_df(df: pd.DataFrame, work: Path, *, predict_first: bool = False, **cfg: Any) -> Any:
    """fastai's quickest path: TextDataLoaders.from_df (min_freq 3: it passes no min_freq on)
    and text_classifier_learner."""
    learn = _awd_lstm(_dls_from_df(df, work), **cfg)
    if predict_first:
        with learn.no_bar():
            learn.predict("a zorblax question about a frobnicated widget")  # unknown words
    return learn


def from_datablock(
    df: pd.DataFrame,
    work: Path,
    *,
    min_freq: int = 3,
    lin_ftrs: list[int] | None = None,
    **cfg: Any,
) -> Any:
    """The DataBlock API, as in fastai's text tutorial."""
    from fastai.text.all import TextBlock

    dls = _dls_from_block(df, work, TextBlock.from_df("text", min_freq=min_freq, n_workers=0))
    extra = {} if lin_ftrs is None else {"lin_ftrs": lin_ftrs}
    return _awd_lstm(dls, extra, **cfg)


def ulmfit(df: pd.DataFrame, work: Path) -> Any:
    """Language model -> save_encoder -> classifier.load_encoder (fastai's ULMFiT recipe)."""
    from fastai.text.all import (
        AWD_LSTM,
        TextDataLoaders,
        awd_lstm_lm_config,
        language_model_learner,
        text_classifier_learner,
    )

    arch = {"emb_sz": 16, "n_hid": 24, "n_layers": 2}
    dls_lm = TextDataLoaders.from_df(
        df, path=work, text_col="text", is_lm=True, valid_pct=0.2, seed=1, bs=16, num_workers=0
    )
    lm = _fit(
        language_model_learner(
            dls_lm, AWD_LSTM, pretrained=False, config={**awd_lstm_lm_config, **arch}
        )
    )
    lm.save_encoder("zoo_encoder")
    dls = _dls_from_df(df, work, text_vocab=dls_lm.vocab)
    learn = text_classifier_learner(dls, AWD_LSTM, pretrained=False, config=_small())
    learn.load_encoder("zoo_encoder")
    return _fit(learn)


def sentencepiece(df: pd.DataFrame, work: Path) -> Any:
    """A subword tokenizer (fastai's SentencePieceTokenizer), which the onnx client cannot run."""
    from fastai.text.all import SentencePieceTokenizer, TextBlock

    tok = SentencePieceTokenizer(vocab_sz=120, cache_dir=work / "spm")
    return _awd_lstm(_dls_from_block(df, work, TextBlock.from_df("text", tok=tok, n_workers=0)))


def shout(t: str) -> str:
    """A custom text rule (module-level, so the learner pickles)."""
    return t.replace("!", " xxshout ")


def custom_rules(df: pd.DataFrame, work: Path) -> Any:
    """fastai's default tokenizer with one extra, user-written rule."""
    from fastai.text.all import TextBlock, defaults

    rules = [*defaults.text_proc_rules, shout]
    return _awd_lstm(_dls_from_block(df, work, TextBlock.from_df("text", rules=rules, n_workers=0)))


def multi_label(df: pd.DataFrame, work: Path) -> Any:
    """MultiCategoryBlock: several labels per text."""
    from fastai.text.all import MultiCategoryBlock, TextBlock

    dls = _dls_from_block(
        df, work, TextBlock.from_df("text", n_workers=0), MultiCategoryBlock, label_delim=" "
    )
    return _awd_lstm(dls)


def bag_of_embeddings(df: pd.DataFrame, work: Path) -> Any:
    """A text model other than AWD_LSTM: a plain fastai Learner around a user's own nn.Module."""
    from fastai.text.all import Learner, accuracy

    dls = _dls_from_df(df, work)
    model = _bag_model(len(dls.vocab[0]), len(dls.vocab[1]))
    return _fit(Learner(dls, model, metrics=accuracy))


def _bag_model(n_tokens: int, n_classes: int) -> Any:
    from torch import nn

    return nn.Sequential(nn.EmbeddingBag(n_tokens, 16), nn.Linear(16, n_classes))


# name -> (factory, expected): "release" (every variant), "no-onnx" (pickle variants, onnx
# skipped with a reason) or "refused: <words of the message>"
ZOO: dict[str, tuple[Callable[[pd.DataFrame, Path], Any], str]] = {
    "from_df, min_freq 3, predict before export": (
        lambda df, w: from_df(df, w, predict_first=True),
        "release",
    ),
    "DataBlock, min_freq 1": (lambda df, w: from_datablock(df, w, min_freq=1), "release"),
    "DataBlock, 1 layer": (lambda df, w: from_datablock(df, w, n_layers=1), "release"),
    "DataBlock, 4 layers, emb 24 / hid 40, lin_ftrs [32, 16]": (
        lambda df, w: from_datablock(
            df, w, min_freq=1, n_layers=4, emb_sz=24, n_hid=40, lin_ftrs=[32, 16]
        ),
        "release",
    ),
    "DataBlock, 3 layers, emb 8 / hid 12": (
        lambda df, w: from_datablock(df, w, n_layers=3, emb_sz=8, n_hid=12),
        "release",
    ),
    "ULMFiT: language model, save_encoder, load_encoder": (ulmfit, "release"),
    "SentencePiece tokenizer": (sentencepiece, "no-onnx: SentencePieceTokenizer"),
    "custom text rule": (custom_rules, "no-onnx: text rule tests.zoo.shout"),
    "multi-label (MultiCategoryBlock)": (multi_label, "refused: multi-label learner"),
    "own nn.Module (EmbeddingBag)": (bag_of_embeddings, "refused: not an AWD_LSTM text classifier"),
}


def long_texts(
    texts: Sequence[str], labels: Sequence[str], per_class: int = 1, min_words: int = 170
) -> list[tuple[str, str]]:
    """(text, label) rows longer than twice fastai's `seq_len` (72 tokens): several texts of one
    class run together, the way a ticket or an e-mail asks several things at once.

    fastai's SentenceEncoder feeds such a text to the model in `seq_len` slices, which for a
    batch of several texts are not contiguous: the path a batch of short texts never takes.
    Deterministic; distinct rows (each starts at another text of its class).
    """
    by_label: dict[str, list[str]] = defaultdict(list)
    for t, lab in zip(texts, labels, strict=True):
        by_label[lab].append(t)
    out = []
    for label in sorted(by_label):
        pool = by_label[label]
        for k in range(per_class):
            parts: list[str] = []
            i = k
            while sum(len(p.split()) for p in parts) < min_words:
                parts.append(pool[i % len(pool)].rstrip(".?! ") + ".")
                i += 1 + k
            out.append((" ".join(parts), label))
    return out


def many_classes(
    n_classes: int = 80, train_per_class: int = 6, eval_per_class: int = 2, seed: int = 0
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train and eval frames of `n_classes` intents (`intent_000`...), each named by a word of
    its own inside shared phrasings: the shape of a 150-intent dataset, small enough to train a
    tiny model on in seconds. No text in both."""
    rng = random.Random(seed)
    frames = [f.replace("{w}", "{w} thing") for f in _FRAMES]
    train, eval_ = [], []
    for k in range(n_classes):
        label, word = f"intent_{k:03d}", f"topic{k}"
        texts = [f.format(w=word) for f in frames]
        texts += [f"{t} {rng.choice(['now', 'please', 'today', 'again'])}" for t in texts]
        texts = sorted(set(texts))
        rng.shuffle(texts)
        eval_ += [(t, label) for t in texts[:eval_per_class]]
        train += [(t, label) for t in texts[eval_per_class : eval_per_class + train_per_class]]
    return (
        pd.DataFrame(train, columns=["text", "label"]),
        pd.DataFrame(eval_, columns=["text", "label"]),
    )
