"""Training an AWD_LSTM text classifier with fastai (optionally ULMFiT: language model first).

Only fastai/torch classes end up inside the exported learner, so `export.pkl` loads with plain
fastai in a process that never imports this package.
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from pathlib import Path
from typing import Any

from pipeline.config import ReleaseConfig
from pipeline.dataset import LabelledTexts
from pipeline.errors import InputError

log = logging.getLogger("pipeline.train")

WT103_HINT = (
    "set train.pretrained_weights and train.pretrained_vocab to local copies of the WT103 files "
    "(lstm_fwd.pth, itos_wt103.pkl), or set train.pretrained = false to train from scratch"
)


def case_blind_rules() -> list[Any]:
    """fastai's default text rules without `replace_all_caps` and `replace_maj`.

    With them, `Customer Order` becomes `xxmaj customer xxmaj order` and a Title Case or ALL CAPS
    query is a run of markers the training texts rarely had; without them the text is only
    lowercased (fastai's own `lowercase` rule), so case cannot change an answer. They are fastai's
    functions, pickled by reference: `load_learner` needs no code from this project.
    """
    from fastai.text.core import defaults, replace_all_caps, replace_maj

    return [r for r in defaults.text_proc_rules if r not in (replace_all_caps, replace_maj)]


def _progress_callback(total_epochs: int, what: str) -> Any:
    """A fastai callback that logs one line per epoch (a fastai class, used only during fit)."""
    from fastai.callback.core import Callback

    class EpochLog(Callback):
        order = 90

        def before_fit(self) -> None:
            self._t = time.perf_counter()

        def after_epoch(self) -> None:
            names = [n for n in self.recorder.metric_names[1:] if n != "time"]
            values = self.recorder.log[1 : 1 + len(names)]
            parts = [
                f"{n} {v:.4f}" if isinstance(v, float) else f"{n} {v}"
                for n, v in zip(names, values, strict=False)
                if v is not None  # valid_pct = 0: nothing held out, no valid_loss or accuracy
            ]
            log.info(
                "%s epoch %d/%d: %s (%.1fs)",
                what,
                self.epoch + 1,
                total_epochs,
                ", ".join(parts),
                time.perf_counter() - self._t,
            )
            self._t = time.perf_counter()

    return EpochLog()


def _weight_average_callback(decay: float) -> Any:
    """A fastai callback: keep a moving average of the weights over the training steps and leave
    it in the model after fit (Polyak averaging; flatter minima tend to hold up better on inputs
    unlike the training set). Buffers (BatchNorm statistics) are averaged the same way."""
    import torch
    from fastai.callback.core import Callback

    class WeightAverage(Callback):
        order = 95  # after the optimizer step

        def before_fit(self) -> None:
            self._steps = 0
            self._avg = {
                k: v.detach().clone()
                for k, v in self.learn.model.state_dict().items()
                if v.is_floating_point()
            }

        def after_batch(self) -> None:
            if not self.training:
                return
            self._steps += 1
            # the first steps' random weights would weigh too much: ramp the decay up
            d = min(decay, (1 + self._steps) / (10 + self._steps))
            with torch.no_grad():
                for k, v in self.learn.model.state_dict().items():
                    if k in self._avg:
                        self._avg[k].mul_(d).add_(v.detach(), alpha=1 - d)

        def after_fit(self) -> None:
            if self._steps:
                self.learn.model.load_state_dict(self._avg, strict=False)
                log.info("weights: moving average of %d steps (decay %g)", self._steps, decay)
            del self._avg

    return WeightAverage()


def phrasing_words(
    texts: list[list[int]],
    labels: list[int],
    n_classes: int,
    exclude: set[int],
    min_share: float = 0.01,
) -> list[int]:
    """Token ids that say how a question is phrased, not what it is about: in at least `min_share`
    of the texts and spread over the classes nearly evenly (label entropy >= 0.9 of the maximum).
    The ids in `exclude` (fastai's special tokens) are never included."""
    import math
    from collections import Counter

    per_class: dict[int, Counter[int]] = {}
    for toks, y in zip(texts, labels, strict=True):
        for tok in set(toks):
            per_class.setdefault(tok, Counter())[y] += 1
    class_sizes = Counter(labels)
    out = []
    for tok, counts in per_class.items():
        if tok in exclude or sum(counts.values()) < min_share * len(texts):
            continue
        # share of each class's texts that hold the word, so unequal class sizes do not count
        rates = [counts[c] / class_sizes[c] for c in range(n_classes) if class_sizes[c]]
        total = sum(rates)
        entropy = -sum(r / total * math.log(r / total) for r in rates if r)
        if entropy >= 0.9 * math.log(len(rates)):
            out.append(tok)
    return sorted(out)


def _phrase_dropout_callback(p: float, drop_ids: list[int], pad_idx: int, seq_len: int) -> Any:
    """A fastai callback: each training batch, a share `p` of the texts lose their phrasing words
    (`phrasing_words`), so the classifier also learns from terse noun phrases and fragments."""
    import torch
    from fastai.callback.core import Callback
    from fastai.text.data import pad_chunk
    from fastai.torch_core import retain_type

    drop = torch.tensor(drop_ids, dtype=torch.long)

    class PhraseDropout(Callback):
        order = 5

        def before_batch(self) -> None:
            if not self.training or not len(drop):
                return
            x = self.xb[0]
            picked = torch.rand(x.shape[0]) < p
            if not picked.any():
                return
            rows = []
            for row, pick in zip(x, picked.tolist(), strict=True):
                toks = row[row != pad_idx]
                if pick:
                    kept = toks[~torch.isin(toks, drop)]
                    if len(kept) > 1:  # more than xxbos left
                        toks = kept
                rows.append(pad_chunk(toks, pad_idx=pad_idx, seq_len=seq_len, pad_len=x.shape[1]))
            self.learn.xb = (retain_type(torch.stack(rows), x), *self.xb[1:])

    return PhraseDropout()


def _unk_dropout_callback(p: float, unk_idx: int, keep_ids: list[int]) -> Any:
    """A fastai callback: each training batch, a share `p` of the words become `xxunk`, so the
    classifier learns an embedding for "a word I have not seen" and to classify around it (a word
    out of the vocabulary, a typo, a new domain word all read as `xxunk` at prediction time)."""
    import torch
    from fastai.callback.core import Callback
    from fastai.torch_core import retain_type

    keep = torch.tensor(keep_ids, dtype=torch.long)

    class UnkDropout(Callback):
        order = 6  # after PhraseDropout: replace among the words it left

        def before_batch(self) -> None:
            if not self.training:
                return
            x = self.xb[0]
            hit = (torch.rand(x.shape) < p) & ~torch.isin(x, keep)
            if hit.any():
                self.learn.xb = (retain_type(x.masked_fill(hit, unk_idx), x), *self.xb[1:])

    return UnkDropout()


def _fit(
    learn: Any,
    epochs: int,
    lr: float,
    wd: float,
    what: str,
    interactive: bool,
    cbs: tuple[Any, ...] = (),
) -> None:
    import fastai.callback.schedule  # noqa: F401  (adds Learner.fit_one_cycle)
    from fastcore.basics import noop

    # The Recorder's wall-clock column would end up in the exported pickle (and make two
    # identical trainings differ byte for byte); EpochLog times the epochs for the log instead.
    learn.recorder.add_time = False
    with warnings.catch_warnings():
        # valid_pct = 0 leaves the validation loader empty on purpose
        warnings.filterwarnings("ignore", "Your generator is empty")
        if interactive:
            learn.fit_one_cycle(epochs, lr, wd=wd, cbs=list(cbs))
            return
        logger = learn.logger
        learn.logger = noop  # Recorder would print raw lists; EpochLog logs readable lines instead
        try:
            with learn.no_bar():
                learn.fit_one_cycle(epochs, lr, wd=wd, cbs=[_progress_callback(epochs, what), *cbs])
        finally:
            learn.logger = logger


WT103_SHAPE = (400, 1152, 3)  # emb_sz, n_hid, n_layers of fastai's WT103 AWD_LSTM


def _pretrained_files(config: ReleaseConfig) -> tuple[Path, Path]:
    t = config.train
    if t.pretrained_weights and t.pretrained_vocab:
        return t.pretrained_weights, t.pretrained_vocab
    if (t.emb_sz, t.n_hid, t.n_layers) != WT103_SHAPE:
        raise InputError(
            "train.pretrained: the WT103 weights need emb_sz=400, n_hid=1152, n_layers=3; "
            f"found {t.emb_sz}, {t.n_hid}, {t.n_layers}"
        )
    from fastai.data.external import URLs, untar_data

    try:
        path = untar_data(URLs.WT103_FWD, c_key="model")
        return next(path.glob("*.pth")), next(path.glob("*.pkl"))
    except Exception as e:  # no network, proxy, disk: all mean the same to the user
        raise InputError(
            f"train.pretrained: the WT103 weights could not be downloaded from {URLs.WT103_FWD} "
            f"({type(e).__name__}: {e}); {WT103_HINT}"
        ) from e


def pretrained_shape(weights: Path) -> tuple[int, int, int]:
    """(emb_sz, n_hid, n_layers) of an AWD_LSTM language model's saved weights (fastai's `.pth`).

    Raises:
        InputError: the file is not a state dict of a fastai AWD_LSTM language model.
    """
    import torch

    try:
        wgts = torch.load(weights, map_location="cpu", weights_only=True)
        wgts = wgts.get("model", wgts)
        emb = wgts["0.encoder.weight"]
        layers = sorted(
            int(k.split(".")[2])
            for k in wgts
            if k.startswith("0.rnns.") and k.endswith("weight_hh_l0_raw")
        )
        n_hid = wgts["0.rnns.0.weight_hh_l0_raw"].shape[1] if len(layers) > 1 else emb.shape[1]
        return int(emb.shape[1]), int(n_hid), len(layers)
    except Exception as e:
        raise InputError(
            f"train.pretrained_weights: {weights} is not the state dict of a fastai AWD_LSTM language "
            f"model ({type(e).__name__}: {e}); {WT103_HINT}"
        ) from e


def _load_pretrained(learn: Any, files: tuple[Path, Path], model: Any, t: Any) -> None:
    found = pretrained_shape(files[0])
    # one layer: fastai sizes it emb_sz -> emb_sz and never uses n_hid
    if found != (t.emb_sz, t.n_hid if t.n_layers > 1 else found[1], t.n_layers):
        raise InputError(
            f"train.pretrained_weights: {files[0]} holds an AWD_LSTM with emb_sz={found[0]}, "
            f"n_hid={found[1]}, n_layers={found[2]}; the config asks for {t.emb_sz}, {t.n_hid}, "
            f"{t.n_layers}: set train.emb_sz, n_hid and n_layers to the weights' shape"
        )
    try:
        learn.load_pretrained(*files, model=model)
    except Exception as e:
        raise InputError(
            f"train.pretrained_weights: {files[0]} / {files[1]} are not WT103-style AWD_LSTM weights and "
            f"vocabulary ({type(e).__name__}: {e}); {WT103_HINT}"
        ) from e
    learn.unfreeze()  # fastai freezes the encoder after loading; the whole model is fine-tuned


def train_classifier(
    config: ReleaseConfig,
    train: LabelledTexts,
    work_dir: Path,
    *,
    interactive: bool = False,
) -> Any:
    """Train a text classifier from labelled texts and return the fastai Learner.

    With `train.lm_epochs > 0` a language model is first fine-tuned (ULMFiT) on the training texts
    and the classifier starts from its encoder.
    Deterministic: the same config, data, library versions and `train.threads` give the same
    weights, whatever PYTHONHASHSEED (tests/integration/test_reproducible.py).

    Raises:
        InputError: pretrained weights that cannot be had or do not fit the configured network.
    """
    import pandas as pd
    import torch
    from fastai.data.block import CategoryBlock, DataBlock
    from fastai.data.transforms import ColReader, RandomSplitter
    from fastai.losses import LabelSmoothingCrossEntropyFlat
    from fastai.metrics import accuracy
    from fastai.text.data import TextBlock
    from fastai.text.learner import language_model_learner, text_classifier_learner
    from fastai.text.models.awdlstm import AWD_LSTM, awd_lstm_clas_config, awd_lstm_lm_config
    from fastai.torch_core import set_seed

    t = config.train
    pretrained = _pretrained_files(config) if t.pretrained else None
    torch.set_num_threads(t.threads or os.cpu_count() or 1)
    set_seed(t.seed, reproducible=True)
    df = pd.DataFrame({"text": list(train.texts), "label": list(train.labels)})
    work_dir.mkdir(parents=True, exist_ok=True)
    arch = {"emb_sz": t.emb_sz, "n_hid": t.n_hid, "n_layers": t.n_layers}
    tok: dict[str, Any] = {"min_freq": t.min_freq, "max_vocab": t.max_vocab, "n_workers": 0}
    if not t.case_markers:
        tok["rules"] = case_blind_rules()
    if t.tokenizer == "subwords":
        import importlib.util

        from fastai.text.core import SentencePieceTokenizer

        if importlib.util.find_spec("sentencepiece") is None:  # fastai imports it mid-setup
            raise InputError(
                'train.tokenizer = "subwords" needs the sentencepiece package: pip install '
                "sentencepiece (the servers that load the model need it too)"
            )

        # pieces of words, so a typo or an unseen word still shares most of its pieces with
        # words the model knows; fastai sizes the piece vocabulary from the training texts
        tok["tok"] = SentencePieceTokenizer(cache_dir=work_dir / "spm")
    vocab = None
    encoder_name = None

    if t.lm_epochs > 0:
        lm_df = df[["text"]]
        lm_block = DataBlock(
            blocks=TextBlock.from_df("text", is_lm=True, seq_len=t.seq_len, **tok),
            get_x=ColReader("text"),
            splitter=RandomSplitter(t.valid_pct, seed=t.seed),
        )
        dls_lm = lm_block.dataloaders(lm_df, bs=t.batch_size, seq_len=t.seq_len, num_workers=0)
        lm = language_model_learner(
            dls_lm,
            AWD_LSTM,
            config={**awd_lstm_lm_config, **arch},
            drop_mult=t.drop_mult,
            pretrained=False,
            path=work_dir,
            metrics=[accuracy],
        )
        if pretrained:
            _load_pretrained(lm, pretrained, lm.model, t)
        log.info("language model: %d texts, vocab %d", len(lm_df), len(dls_lm.vocab))
        _fit(lm, t.lm_epochs, t.lm_lr, t.wd, "language model", interactive)
        encoder_name = "lm_encoder"
        lm.save_encoder(encoder_name)
        vocab = dls_lm.vocab

    set_seed(t.seed, reproducible=True)
    block = DataBlock(
        blocks=(
            TextBlock.from_df("text", vocab=vocab, seq_len=t.seq_len, **tok),
            CategoryBlock(vocab=train.classes),
        ),
        get_x=ColReader("text"),
        get_y=ColReader("label"),
        splitter=RandomSplitter(t.valid_pct, seed=t.seed),
    )
    dls = block.dataloaders(df, bs=t.batch_size, seq_len=t.seq_len, num_workers=0)
    extra = (
        {"loss_func": LabelSmoothingCrossEntropyFlat(eps=t.label_smoothing)}
        if t.label_smoothing
        else {}
    )
    learn = text_classifier_learner(
        dls,
        AWD_LSTM,
        config={**awd_lstm_clas_config, **arch},
        drop_mult=t.drop_mult,
        pretrained=False,
        seq_len=t.seq_len,
        metrics=[accuracy],
        path=work_dir,
        **extra,
    )
    if t.word_dropout is not None:
        # fastai's embedding dropout zeroes a word's vector everywhere in a batch: raised, the
        # classifier cannot lean on a few phrasing words. Set exactly, not scaled by drop_mult.
        learn.model[0].module.encoder_dp.embed_p = t.word_dropout
    if encoder_name:
        learn.load_encoder(encoder_name)
        learn.unfreeze()  # load_encoder freezes it: fine-tune the whole classifier
    elif pretrained:
        _load_pretrained(learn, pretrained, learn.model[0], t)
    log.info(
        "classifier: %d train / %d valid texts, vocab %d, %d classes, %.1fM parameters, %d threads",
        len(dls.train_ds),
        len(dls.valid_ds),
        len(dls.vocab[0]),
        len(dls.vocab[1]),
        sum(p.numel() for p in learn.model.parameters()) / 1e6,
        torch.get_num_threads(),
    )
    more_cbs = []
    from fastai.text.core import PAD, UNK, defaults

    itos = dls.vocab[0]
    # fastai's special tokens; SentencePiece returns them as `▁xxbos`...
    specials = {i for i, w in enumerate(itos) if w.lstrip("▁") in defaults.text_spec_tok}
    if t.phrase_dropout:
        # with subwords, only whole-word pieces (`▁how`, not `ing`) can be dropped without
        # leaving parts of words behind
        parts = (
            {i for i, w in enumerate(itos) if not w.startswith("▁") or w == "▁"}
            if t.tokenizer == "subwords"
            else set()
        )
        items = [(x.tolist(), int(y)) for x, y in dls.train_ds]
        drop_ids = phrasing_words(
            [x for x, _ in items], [y for _, y in items], len(dls.vocab[1]), specials | parts
        )
        log.info(
            "phrase dropout %.2f: %d phrasing words (%s)",
            t.phrase_dropout,
            len(drop_ids),
            " ".join(itos[i] for i in drop_ids),
        )
        more_cbs.append(
            _phrase_dropout_callback(t.phrase_dropout, drop_ids, itos.index(PAD), t.seq_len)
        )
    if t.unk_dropout:
        more_cbs.append(_unk_dropout_callback(t.unk_dropout, itos.index(UNK), sorted(specials)))
        log.info("unk dropout %.2f: that share of training words is shown as xxunk", t.unk_dropout)
    if t.ema_decay:
        more_cbs.append(_weight_average_callback(t.ema_decay))
    _fit(learn, t.epochs, t.lr, t.wd, "classifier", interactive, tuple(more_cbs))
    if t.typo_aliases:
        from pipeline import typo_aliases

        n = typo_aliases.add_to_learner(
            learn, (x for x, _ in dls.train_ds), typo_aliases.DEFAULT_MIN_COUNT
        )
        log.info(
            "typo aliases: %d one-slip misspellings of the words seen %d+ times map to them",
            n,
            typo_aliases.DEFAULT_MIN_COUNT,
        )
    # the last batch's tensors are no part of the model (without a validation set they even
    # hold the training graph); export.pkl would pickle them
    from pipeline.quantization import detach_batch_state

    learn.pred = learn.loss = learn.loss_grad = None
    detach_batch_state(learn)
    learn.path = Path(".")  # fastai's default: the exported pickle names no build directory
    return learn


def load_exported(path: Path, name: str | None = None) -> Any:
    """Load an export.pkl and check that it is a fastai text classifier (AWD_LSTM); `name`: what
    the messages call it (default the path).

    Raises:
        InputError: the file does not unpickle as a fastai Learner holding an AWD_LSTM classifier.
    """
    import warnings

    import torch
    from fastai.learner import Learner

    where = name or str(path)

    # fastai's load_learner, with the type checked before it touches `.dls` (so that a pickle of
    # something else gets a clear message instead of an AttributeError).
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            learn = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:
        raise InputError(f"{where}: not a loadable fastai export ({type(e).__name__}: {e})") from e
    if not isinstance(learn, Learner):
        raise InputError(
            f"{where}: expected a fastai Learner, found {type(learn).__module__}.{type(learn).__name__}"
        )
    learn.dls.cpu()
    from fastai.text.models.awdlstm import AWD_LSTM
    from fastai.text.models.core import SentenceEncoder

    enc = getattr(learn.model, "__getitem__", None) and learn.model[0]
    if not isinstance(enc, SentenceEncoder) or not isinstance(enc.module, AWD_LSTM):
        found = (
            type(enc.module).__name__
            if isinstance(enc, SentenceEncoder)
            else type(learn.model).__name__
        )
        raise InputError(
            f"{where}: the model is {found}, not an AWD_LSTM text classifier; fastai-release "
            "quantizes and exports AWD_LSTM only: train it with "
            "text_classifier_learner(dls, AWD_LSTM, ...)"
        )
    if _is_multi_label(learn):
        raise InputError(
            f"{where}: a multi-label learner (MultiCategoryBlock, one or more labels per text) is "
            "not supported: the eval CSV, the gates and the client answer one label per text; "
            "train it with CategoryBlock (one label per row)"
        )
    return learn


def _is_multi_label(learn: Any) -> bool:
    from fastai.data.transforms import MultiCategorize

    tfms = getattr(getattr(learn.dls, "tfms", None), "__getitem__", None)
    labels = learn.dls.tfms[1] if tfms and len(learn.dls.tfms) > 1 else []
    fs = getattr(labels, "fs", labels)
    return (
        any(isinstance(t, MultiCategorize) for t in fs) or "BCE" in type(learn.loss_func).__name__
    )
    return learn


def labels_of(learn: Any) -> list[str]:
    """The class names of a classifier learner, in output order."""
    return [str(x) for x in learn.dls.vocab[1]]
