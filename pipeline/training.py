"""Training an AWD_LSTM text classifier with fastai (optionally ULMFiT: language model first).

`train_classifier` runs in named steps (language model, classifier, its regularizing callbacks,
fit, after fit); the callbacks and the fit loop are `training_callbacks`, pretrained weights
`pretrained`, what `release init --time-budget` times `time_budget_measure`, and loading a user's
export.pkl `learner_file.load_exported`.

Only fastai/torch classes end up inside the exported learner, so `export.pkl` loads with plain
fastai in a process that never imports this package.
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.config import ReleaseConfig
from pipeline.dataset import LabelledTexts
from pipeline.errors import InputError
from pipeline.pretrained import load_pretrained, pretrained_files
from pipeline.training_callbacks import (
    estimate_fit,
    fit,
    phrase_dropout_callback,
    phrasing_words,
    unk_dropout_callback,
    weight_average_callback,
)

log = logging.getLogger("pipeline.train")


def case_blind_rules() -> list[Any]:
    """fastai's default text rules without `replace_all_caps` and `replace_maj`.

    With them, `Customer Order` becomes `xxmaj customer xxmaj order` and a Title Case or ALL CAPS
    query is a run of markers the training texts rarely had; without them the text is only
    lowercased (fastai's own `lowercase` rule), so case cannot change an answer. They are fastai's
    functions, pickled by reference: `load_learner` needs no code from this project.
    """
    from fastai.text.core import defaults, replace_all_caps, replace_maj

    return [r for r in defaults.text_proc_rules if r not in (replace_all_caps, replace_maj)]


DEVICES = ("auto", "cpu", "cuda", "mps")
# With a time budget, the ULMFiT language model may use at most this share of it.
LM_BUDGET_SHARE = 0.5


def select_device(wanted: str, *, cuda: bool, mps: bool) -> str:
    """The device training runs on: `wanted` ("auto", "cpu", "cuda", "mps") against what torch
    sees (`cuda`, `mps`); "auto" takes a GPU when there is one, else the CPU.

    Raises:
        InputError: a GPU was asked for and torch sees none (with what to do).
    """
    if wanted == "auto":
        return "cuda" if cuda else "mps" if mps else "cpu"
    if wanted == "cuda" and not cuda:
        raise InputError(
            'train.device = "cuda": torch sees no CUDA GPU on this machine (a CPU-only torch '
            "build, no driver, or CUDA_VISIBLE_DEVICES empty); install a CUDA build of torch "
            '(the same version: the pickles record it), or set train.device = "auto" or "cpu"'
        )
    if wanted == "mps" and not mps:
        raise InputError(
            'train.device = "mps": torch sees no Apple-silicon GPU (MPS) on this machine; '
            'set train.device = "auto" or "cpu"'
        )
    return wanted


def training_device(wanted: str) -> str:
    """`select_device` with what this machine's torch reports."""
    import torch

    mps = getattr(torch.backends, "mps", None)
    return select_device(
        wanted,
        cuda=torch.cuda.is_available(),
        mps=bool(mps is not None and mps.is_available()),
    )


def _tokenizer_options(t: Any, work_dir: Path) -> dict[str, Any]:
    """TextBlock's tokenizer arguments for the [train] settings."""
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
    return tok


def _classifier_dls(
    t: Any, df: Any, classes: list[str], vocab: Any, tok: dict[str, Any], device: str
) -> Any:
    """fastai DataLoaders of the classifier: texts tokenized and numericalized, split by seed."""
    import torch
    from fastai.data.block import CategoryBlock, DataBlock
    from fastai.data.transforms import ColReader, RandomSplitter
    from fastai.text.data import TextBlock

    block = DataBlock(
        blocks=(
            TextBlock.from_df("text", vocab=vocab, seq_len=t.seq_len, **tok),
            CategoryBlock(vocab=classes),
        ),
        get_x=ColReader("text"),
        get_y=ColReader("label"),
        splitter=RandomSplitter(t.valid_pct, seed=t.seed),
    )
    return block.dataloaders(
        df, bs=t.batch_size, seq_len=t.seq_len, num_workers=0, device=torch.device(device)
    )


def _classifier_learner(t: Any, dls: Any, work_dir: Path) -> Any:
    """An AWD_LSTM text classifier learner of the configured shape on `dls`, from scratch."""
    from fastai.losses import LabelSmoothingCrossEntropyFlat
    from fastai.metrics import accuracy
    from fastai.text.learner import text_classifier_learner
    from fastai.text.models.awdlstm import AWD_LSTM, awd_lstm_clas_config

    extra = (
        {"loss_func": LabelSmoothingCrossEntropyFlat(eps=t.label_smoothing)}
        if t.label_smoothing
        else {}
    )
    return text_classifier_learner(
        dls,
        AWD_LSTM,
        config={
            **awd_lstm_clas_config,
            "emb_sz": t.emb_sz,
            "n_hid": t.n_hid,
            "n_layers": t.n_layers,
        },
        drop_mult=t.drop_mult,
        pretrained=False,
        seq_len=t.seq_len,
        metrics=[accuracy],
        path=work_dir,
        **extra,
    )


LM_ENCODER = "lm_encoder"  # the language model's encoder, saved for the classifier to start from


@dataclass(frozen=True)
class _Run:
    """What every step of one `train_classifier` call reads."""

    t: Any  # the [train] settings
    work_dir: Path
    device: str
    tok: dict[str, Any]  # TextBlock's tokenizer arguments (`_tokenizer_options`)
    interactive: bool
    estimate: bool
    clock: Any
    facts: dict[str, Any]


def train_classifier(
    config: ReleaseConfig,
    train: LabelledTexts,
    work_dir: Path,
    *,
    interactive: bool = False,
    facts: dict[str, Any] | None = None,
    clock: Any = time.monotonic,
    estimate: bool = True,
    stop_near_chance: bool = False,
) -> Any:
    """Train a text classifier from labelled texts and return the fastai Learner (on the CPU).

    With `train.lm_epochs > 0` a language model is first fine-tuned (ULMFiT) on the training texts
    and the classifier starts from its encoder. Before each fit a few real steps are timed and the
    estimate logged (`estimate`); with `train.time_budget` the fits stop at the budget and the
    classifier's best epoch (validation accuracy, then loss) is the one returned. `facts`, when
    given, receives where and how training ran (device, epochs run, kept epoch, estimates).
    Deterministic: the same config, data, library versions and `train.threads` give the same
    weights, whatever PYTHONHASHSEED (tests/integration/test_reproducible.py), with or without the
    estimate, and with a budget that does not stop the fit.

    Raises:
        InputError: pretrained weights that cannot be had or do not fit the configured network;
            a `train.device` this machine does not have.
        GateFailed: the classifier did not train (`evaluation.training_verdict` on the
            held-out rows; only with `stop_near_chance`, which the build sets from
            validate.beat_majority; otherwise a warning).
    """
    import pandas as pd
    import torch
    from fastai.torch_core import set_seed

    from pipeline.time_budget import parse_duration

    t = config.train
    facts = {} if facts is None else facts
    device = training_device(t.device)
    facts["device"] = device
    pretrained = pretrained_files(config) if t.pretrained else None
    torch.set_num_threads(t.threads or os.cpu_count() or 1)
    budget = parse_duration(t.time_budget) if t.time_budget else None
    started = clock()
    set_seed(t.seed, reproducible=True)
    df = pd.DataFrame({"text": list(train.texts), "label": list(train.labels)})
    work_dir.mkdir(parents=True, exist_ok=True)
    run = _Run(
        t, work_dir, device, _tokenizer_options(t, work_dir), interactive, estimate, clock, facts
    )
    vocab = _language_model(run, df, pretrained, budget) if t.lm_epochs > 0 else None
    learn, dls = _classifier(run, df, train.classes, vocab, pretrained)
    _fit_classifier(run, learn, _regularizers(t, dls), budget, started)
    _after_fit(run, learn, dls, stop_near_chance)
    return learn


def _language_model(
    run: _Run, df: Any, pretrained: tuple[Path, Path] | None, budget: float | None
) -> Any:
    """ULMFiT's first step: fine-tune a language model on the training texts (within its share of
    the budget) and save its encoder as `LM_ENCODER`. Returns its vocabulary."""
    import torch
    from fastai.data.block import DataBlock
    from fastai.data.transforms import ColReader, RandomSplitter
    from fastai.metrics import accuracy
    from fastai.text.data import TextBlock
    from fastai.text.learner import language_model_learner
    from fastai.text.models.awdlstm import AWD_LSTM, awd_lstm_lm_config

    from pipeline.time_budget import BudgetWatch

    t, clock, facts = run.t, run.clock, run.facts
    arch = {"emb_sz": t.emb_sz, "n_hid": t.n_hid, "n_layers": t.n_layers}
    lm_df = df[["text"]]
    lm_block = DataBlock(
        blocks=TextBlock.from_df("text", is_lm=True, seq_len=t.seq_len, **run.tok),
        get_x=ColReader("text"),
        splitter=RandomSplitter(t.valid_pct, seed=t.seed),
    )
    dls_lm = lm_block.dataloaders(
        lm_df, bs=t.batch_size, seq_len=t.seq_len, num_workers=0, device=torch.device(run.device)
    )
    lm = language_model_learner(
        dls_lm,
        AWD_LSTM,
        config={**awd_lstm_lm_config, **arch},
        drop_mult=t.drop_mult,
        pretrained=False,
        path=run.work_dir,
        metrics=[accuracy],
    )
    if pretrained:
        load_pretrained(lm, pretrained, lm.model, t)
    log.info("language model: %d texts, vocab %d", len(lm_df), len(dls_lm.vocab))
    # the language model may use at most half of the budget: the classifier needs the rest
    lm_watch = BudgetWatch(budget * LM_BUDGET_SHARE, clock) if budget else None
    if run.estimate:
        facts["language_model_estimate"] = estimate_fit(lm, t.lm_epochs, "language model", lm_watch)
    fit(
        lm,
        t.lm_epochs,
        t.lm_lr,
        t.wd,
        "language model",
        run.interactive,
        watch=lm_watch,
        clock=clock,
    )
    if lm_watch is not None and lm_watch.stopped:
        facts["language_model_stopped"] = lm_watch.stopped
    lm.save_encoder(LM_ENCODER)
    return dls_lm.vocab


def _classifier(
    run: _Run, df: Any, classes: list[str], vocab: Any, pretrained: tuple[Path, Path] | None
) -> tuple[Any, Any]:
    """The classifier learner and its DataLoaders, from the language model's encoder (`vocab`
    given), pretrained weights, or scratch; `train.word_dropout` set on its encoder."""
    import torch
    from fastai.torch_core import set_seed

    t = run.t
    set_seed(t.seed, reproducible=True)
    dls = _classifier_dls(t, df, classes, vocab, run.tok, run.device)
    learn = _classifier_learner(t, dls, run.work_dir)
    if t.word_dropout is not None:
        # fastai's embedding dropout zeroes a word's vector everywhere in a batch: raised, the
        # classifier cannot lean on a few phrasing words. Set exactly, not scaled by drop_mult.
        learn.model[0].module.encoder_dp.embed_p = t.word_dropout
    if vocab is not None:
        learn.load_encoder(LM_ENCODER)
        learn.unfreeze()  # load_encoder freezes it: fine-tune the whole classifier
    elif pretrained:
        load_pretrained(learn, pretrained, learn.model[0], t)
    log.info(
        "classifier: %d train / %d valid texts, vocab %d, %d classes, %.1fM parameters, %d threads",
        len(dls.train_ds),
        len(dls.valid_ds),
        len(dls.vocab[0]),
        len(dls.vocab[1]),
        sum(p.numel() for p in learn.model.parameters()) / 1e6,
        torch.get_num_threads(),
    )
    return learn, dls


def _regularizers(t: Any, dls: Any) -> tuple[Any, ...]:
    """The callbacks of `train.phrase_dropout`, `unk_dropout` and `ema_decay` (those set)."""
    from fastai.text.core import PAD, UNK, defaults

    more_cbs = []
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
            phrase_dropout_callback(t.phrase_dropout, drop_ids, itos.index(PAD), t.seq_len)
        )
    if t.unk_dropout:
        more_cbs.append(unk_dropout_callback(t.unk_dropout, itos.index(UNK), sorted(specials)))
        log.info("unk dropout %.2f: that share of training words is shown as xxunk", t.unk_dropout)
    if t.ema_decay:
        more_cbs.append(weight_average_callback(t.ema_decay))
    return tuple(more_cbs)


def _fit_classifier(
    run: _Run, learn: Any, cbs: tuple[Any, ...], budget: float | None, started: float
) -> None:
    """Fit the classifier in what is left of the budget (keeping its best epoch) and record how
    it ran in `run.facts`."""
    from pipeline.time_budget import BudgetWatch

    t, clock, facts = run.t, run.clock, run.facts
    watch = BudgetWatch(budget - (clock() - started), clock) if budget else None
    kept: dict[str, Any] | None = {} if budget else None
    if run.estimate:
        facts["estimate"] = estimate_fit(learn, t.epochs, "classifier", watch)
    fit(
        learn,
        t.epochs,
        t.lr,
        t.wd,
        "classifier",
        run.interactive,
        cbs,
        watch=watch,
        kept=kept,
        clock=clock,
    )
    facts["train_seconds"] = round(clock() - started, 1)
    facts["epochs_run"] = len(learn.recorder.values)
    if watch is not None and watch.stopped:
        facts["stopped"] = watch.stopped
    if kept:
        facts["kept_epoch"] = kept["epoch"]


def _after_fit(run: _Run, learn: Any, dls: Any, stop_near_chance: bool) -> None:
    """Back to the CPU, the did-it-train check, typo aliases, and a path that names no build
    directory."""
    t = run.t
    if run.device != "cpu":
        # quantization, validation and the onnx export run on the CPU; so do the servers
        learn.model.cpu()
        learn.dls.cpu()
    _check_learnt(learn, t, run.facts, stop_near_chance)
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
    # (the last batch, which is no part of the model, is left out where the learner is
    # exported: stages/quantize.export_learner)
    learn.path = Path(".")  # fastai's default: the exported pickle names no build directory


def _check_learnt(learn: Any, t: Any, facts: dict[str, Any], stop: bool) -> None:
    """Stop the build (exit 4) when the classifier did not train, by the rule validation applies
    to the eval set (`evaluation.training_verdict`), here on the held-out training rows: it learnt
    nothing, and quantizing and validating it would only waste the time after training."""
    from collections import Counter

    from pipeline import evaluation as ev
    from pipeline.errors import GateFailed

    if not len(learn.dls.valid_ds):
        facts["near_chance_check"] = "not run: no validation split (train.valid_pct = 0)"
        return
    with learn.no_bar(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Your generator is empty")
        probs, targets = learn.get_preds(dl=learn.dls.valid)
    truth = [int(y) for y in targets]
    n = len(truth)
    classes = learn.dls.vocab[1]
    acc = float((probs.argmax(dim=1) == targets).float().mean())
    top, n_top = Counter(truth).most_common(1)[0]
    v = ev.training_verdict(acc, ev.mean_log_loss(probs.numpy(), truth), len(classes), n_top / n)
    facts["valid_accuracy"] = round(acc, 4)
    facts["valid_majority"] = round(n_top / n, 4)
    facts["valid_loss"] = round(v["loss"], 4)
    if not v["did_not_train"]:
        return
    message = ev.did_not_train_message(
        acc,
        v["loss"],
        v["chance_loss"],
        v["chance_accuracy"],
        f"validation (the {n} held-out training rows, {len(classes)} classes)",
        ev.untrained_advice(t),
    )
    if not stop:
        log.warning("warning: %s; validate.beat_majority = false: going on", message)
        return
    smaller = (
        f", a smaller network (train.emb_sz/n_hid/n_layers = {t.emb_sz}/{t.n_hid}/{t.n_layers} "
        "now: from scratch, 200/400/2 learns in fewer epochs)"
        if t.emb_sz * t.n_hid > 200 * 400
        else ""
    )
    raise GateFailed(
        f"{message}; or `release init --time-budget` to choose them from a measurement on this "
        f"machine{smaller}, or check that data.label_column holds the labels you mean. Nothing "
        f"was quantized or released (validate.beat_majority = false builds it anyway; always "
        f"answering {str(classes[top])!r} scores {100 * n_top / n:.1f}%)"
    )
