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


def _progress_callback(total_epochs: int, what: str, progress: Any = None) -> Any:
    """A fastai callback that logs one line per epoch and, with a `time_budget.Progress`, a line
    with the ETA every so often inside an epoch (a fastai class, used only during fit)."""
    from fastai.callback.core import Callback

    class EpochLog(Callback):
        order = 90

        def before_fit(self) -> None:
            self._t = time.perf_counter()
            if progress is not None:
                progress.start_fit()

        def before_epoch(self) -> None:
            if progress is not None:
                progress.start_epoch()

        def after_batch(self) -> None:
            if progress is not None and self.training:
                line = progress.line(self.epoch, self.iter + 1, self.n_iter)
                if line:
                    log.info("%s %s", what, line)

        def after_epoch(self) -> None:
            if progress is not None:
                progress.end_epoch()
            parts = [
                f"{n} {v:.4f}" if isinstance(v, float) else f"{n} {v}"
                for n, v in _logged(self.recorder).items()
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


def _logged(recorder: Any) -> dict[str, Any]:
    """The values the Recorder logged for the epoch that just ended, by name. An epoch whose
    training was cut short (the time budget) has no train_loss in the log."""
    names = [n for n in recorder.metric_names[1:] if n != "time"]
    if getattr(recorder, "cancel_train", False):
        names = [n for n in names if n != "train_loss"]
    return dict(zip(names, recorder.log[1 : 1 + len(names)], strict=False))


def _epoch_scores(recorder: Any) -> tuple[float | None, float | None]:
    """(validation accuracy, validation loss) of the epoch the recorder just logged."""
    got = _logged(recorder)
    acc, loss = got.get("accuracy"), got.get("valid_loss")
    return (
        float(acc) if acc is not None else None,
        float(loss) if loss is not None else None,
    )


def _keep_best_callback(kept: dict[str, Any]) -> Any:
    """A fastai callback: after each epoch, remember the weights of the best epoch so far (highest
    validation accuracy, then lowest validation loss) and put them back in the model after fit.
    `kept` receives the chosen epoch and its scores."""
    from fastai.callback.core import Callback

    class KeepBest(Callback):
        order = 91  # after EpochLog and the Recorder; before TimeBudget, which may end the fit

        def before_fit(self) -> None:
            self._best: tuple[float, float] | None = None
            self._state: dict[str, Any] | None = None
            self._last = -1

        def after_epoch(self) -> None:
            acc, loss = _epoch_scores(self.recorder)
            self._last = self.epoch
            if acc is None or loss is None:  # nothing held out: nothing to choose by
                return
            score = (acc, -loss)
            if self._best is None or score > self._best:
                self._best = score
                self._state = {
                    k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()
                }
                kept.update(epoch=self.epoch + 1, accuracy=acc, valid_loss=loss)

        def after_fit(self) -> None:
            if self._state is None:
                return
            kept["epochs_run"] = self._last + 1
            if kept["epoch"] != self._last + 1:
                self.model.load_state_dict(self._state)
                log.info(
                    "kept epoch %d of %d (validation accuracy %.4f, loss %.4f): the best one",
                    kept["epoch"],
                    self._last + 1,
                    kept["accuracy"],
                    kept["valid_loss"],
                )
            self._state = None

    return KeepBest()


def _budget_callback(watch: Any, epochs: int, what: str) -> Any:
    """A fastai callback that ends the fit at the time budget (`time_budget.BudgetWatch`): inside
    an epoch when the budget is spent (the epoch is still validated), after an epoch when the next
    would not fit."""
    from fastai.callback.core import Callback, CancelFitException, CancelTrainException

    class TimeBudget(Callback):
        order = 92  # last of the epoch's callbacks: the ones before have seen the epoch

        def before_fit(self) -> None:
            watch.start()
            self._t = watch.clock()

        def before_epoch(self) -> None:
            self._t = watch.clock()

        def after_batch(self) -> None:
            if self.training and watch.spent():
                raise CancelTrainException()

        def after_epoch(self) -> None:
            if watch.end_epoch(watch.clock() - self._t, self.epoch + 1, epochs):
                log.warning(
                    "%s: stopped after epoch %d of %d: %s",
                    what,
                    self.epoch + 1,
                    epochs,
                    watch.stopped,
                )
                raise CancelFitException()

    return TimeBudget()


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


PROGRESS_EVERY_SECONDS = 30.0  # a progress line inside an epoch at most this often


def _fit(
    learn: Any,
    epochs: int,
    lr: float,
    wd: float,
    what: str,
    interactive: bool,
    cbs: tuple[Any, ...] = (),
    *,
    watch: Any = None,
    kept: dict[str, Any] | None = None,
    clock: Any = time.monotonic,
) -> None:
    """fit_one_cycle with the project's callbacks: progress lines (non-interactive), the time
    budget (`watch`, a `time_budget.BudgetWatch`) and keeping the best epoch (`kept`)."""
    import fastai.callback.schedule  # noqa: F401  (adds Learner.fit_one_cycle)
    from fastcore.basics import noop

    from pipeline.time_budget import Progress

    extra = [*cbs]
    if kept is not None:
        extra.append(_keep_best_callback(kept))
    if watch is not None:
        extra.append(_budget_callback(watch, epochs, what))
    # The Recorder's wall-clock column would end up in the exported pickle (and make two
    # identical trainings differ byte for byte); EpochLog times the epochs for the log instead.
    learn.recorder.add_time = False
    with warnings.catch_warnings():
        # valid_pct = 0 leaves the validation loader empty on purpose
        warnings.filterwarnings("ignore", "Your generator is empty")
        if interactive:  # fastai's progress bars show the batches and the ETA
            learn.fit_one_cycle(epochs, lr, wd=wd, cbs=extra)
            return
        logger = learn.logger
        learn.logger = noop  # Recorder would print raw lists; EpochLog logs readable lines instead
        progress = Progress(epochs, every=PROGRESS_EVERY_SECONDS, clock=clock)
        try:
            with learn.no_bar():
                learn.fit_one_cycle(
                    epochs, lr, wd=wd, cbs=[_progress_callback(epochs, what, progress), *extra]
                )
        finally:
            learn.logger = logger


def _estimate(learn: Any, epochs: int, what: str, watch: Any = None) -> dict[str, Any]:
    """Time a few real steps (the weights and random states untouched) and log what the fit will
    take; with a budget, warn when it will not fit. Returns the numbers for the report."""
    from pipeline.time_budget import format_duration, time_steps

    timing = time_steps(learn)
    total = epochs * timing.epoch_seconds
    log.info(
        "%s: estimate %s for %d epoch(s) of %d batches (%.2fs a step, measured now on this "
        "machine) plus validation (%d batches at %.2fs)%s",
        what,
        format_duration(total),
        epochs,
        timing.train_batches,
        timing.step_seconds,
        timing.valid_batches,
        timing.forward_seconds,
        f"; time budget left {format_duration(watch.remaining)}" if watch is not None else "",
    )
    if watch is not None and total > watch.remaining:
        fit = int(watch.remaining // timing.epoch_seconds) if timing.epoch_seconds else epochs
        log.warning(
            "%s: %d epoch(s) will not fit in the time budget left (%s, ~%d epoch(s) at this "
            "speed; a busy machine is slower than when `release init` measured it): training "
            "stops at the budget and keeps the best epoch",
            what,
            epochs,
            format_duration(watch.remaining),
            fit,
        )
    return {
        "estimate_seconds": round(total, 1),
        "step_seconds": round(timing.step_seconds, 4),
        "train_batches": timing.train_batches,
        "valid_batches": timing.valid_batches,
    }


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
    from fastai.data.block import DataBlock
    from fastai.data.transforms import ColReader, RandomSplitter
    from fastai.metrics import accuracy
    from fastai.text.data import TextBlock
    from fastai.text.learner import language_model_learner
    from fastai.text.models.awdlstm import AWD_LSTM, awd_lstm_lm_config
    from fastai.torch_core import set_seed

    from pipeline.time_budget import BudgetWatch, parse_duration

    t = config.train
    facts = {} if facts is None else facts
    device = training_device(t.device)
    facts["device"] = device
    pretrained = _pretrained_files(config) if t.pretrained else None
    torch.set_num_threads(t.threads or os.cpu_count() or 1)
    budget = parse_duration(t.time_budget) if t.time_budget else None
    started = clock()
    set_seed(t.seed, reproducible=True)
    df = pd.DataFrame({"text": list(train.texts), "label": list(train.labels)})
    work_dir.mkdir(parents=True, exist_ok=True)
    arch = {"emb_sz": t.emb_sz, "n_hid": t.n_hid, "n_layers": t.n_layers}
    tok = _tokenizer_options(t, work_dir)
    vocab = None
    encoder_name = None

    if t.lm_epochs > 0:
        lm_df = df[["text"]]
        lm_block = DataBlock(
            blocks=TextBlock.from_df("text", is_lm=True, seq_len=t.seq_len, **tok),
            get_x=ColReader("text"),
            splitter=RandomSplitter(t.valid_pct, seed=t.seed),
        )
        dls_lm = lm_block.dataloaders(
            lm_df, bs=t.batch_size, seq_len=t.seq_len, num_workers=0, device=torch.device(device)
        )
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
        # the language model may use at most half of the budget: the classifier needs the rest
        lm_watch = BudgetWatch(budget * LM_BUDGET_SHARE, clock) if budget else None
        if estimate:
            facts["language_model_estimate"] = _estimate(
                lm, t.lm_epochs, "language model", lm_watch
            )
        _fit(
            lm,
            t.lm_epochs,
            t.lm_lr,
            t.wd,
            "language model",
            interactive,
            watch=lm_watch,
            clock=clock,
        )
        if lm_watch is not None and lm_watch.stopped:
            facts["language_model_stopped"] = lm_watch.stopped
        encoder_name = "lm_encoder"
        lm.save_encoder(encoder_name)
        vocab = dls_lm.vocab

    set_seed(t.seed, reproducible=True)
    dls = _classifier_dls(t, df, train.classes, vocab, tok, device)
    learn = _classifier_learner(t, dls, work_dir)
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
    watch = BudgetWatch(budget - (clock() - started), clock) if budget else None
    kept: dict[str, Any] | None = {} if budget else None
    if estimate:
        facts["estimate"] = _estimate(learn, t.epochs, "classifier", watch)
    _fit(
        learn,
        t.epochs,
        t.lr,
        t.wd,
        "classifier",
        interactive,
        tuple(more_cbs),
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
    if device != "cpu":
        # quantization, validation and the onnx export run on the CPU; so do the servers
        learn.model.cpu()
        learn.dls.cpu()
    _check_learnt(learn, t, facts, stop_near_chance)
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


def measure_for_budget(
    t: Any,
    train: LabelledTexts,
    budget_seconds: float,
    work_dir: Path,
    *,
    candidates: tuple[Any, ...] | None = None,
    clock: Any = time.perf_counter,
) -> Any:
    """What `release init --time-budget` measures (`t`: the [train] settings to start from):
    tokenize the training rows as the build will,
    time a few real training steps of each candidate network on them, on this machine now, and
    choose a recipe that fits (`time_budget.choose`). Returns the `time_budget.Plan`."""
    import dataclasses

    import pandas as pd
    import torch
    from fastai.torch_core import set_seed

    from pipeline import time_budget as tb

    nets = candidates if candidates is not None else tb.CANDIDATES
    batch_size = tb.batch_size_for(len(train))
    t = dataclasses.replace(t, batch_size=batch_size)
    torch.set_num_threads(t.threads or os.cpu_count() or 1)
    device = training_device(t.device)
    set_seed(t.seed, reproducible=True)
    work_dir.mkdir(parents=True, exist_ok=True)
    started = clock()
    df = pd.DataFrame({"text": list(train.texts), "label": list(train.labels)})
    dls = _classifier_dls(t, df, train.classes, None, _tokenizer_options(t, work_dir), device)
    setup = clock() - started
    log.info(
        "tokenized %d rows in %s (vocab %d); timing %d training steps of each network ...",
        len(train),
        tb.format_duration(setup),
        len(dls.vocab[0]),
        tb.STEPS_TIMED,
    )
    threads = t.threads or os.cpu_count() or 1
    thread_steps: dict[int, float] = {}
    if device == "cpu" and threads > 1:
        # which thread count trains fastest here, now: timed on the smallest network
        smallest = _classifier_learner(
            dataclasses.replace(
                t, emb_sz=nets[-1].emb_sz, n_hid=nets[-1].n_hid, n_layers=nets[-1].n_layers
            ),
            dls,
            work_dir,
        )
        for n in (threads, 1):
            torch.set_num_threads(n)
            thread_steps[n] = tb.time_steps(
                smallest, steps=tb.STEPS_TIMED, clock=clock
            ).step_seconds
        del smallest
        chosen = tb.fewer_threads_win(thread_steps)
        torch.set_num_threads(chosen)
        log.info(
            "threads: %s; training with %d",
            ", ".join(f"{n}: {sec:.3f}s a step" for n, sec in thread_steps.items()),
            chosen,
        )
        threads = chosen
    timings = {}
    for net in nets:
        shaped = dataclasses.replace(t, emb_sz=net.emb_sz, n_hid=net.n_hid, n_layers=net.n_layers)
        learn = _classifier_learner(shaped, dls, work_dir)
        timings[net] = tb.time_steps(learn, steps=tb.STEPS_TIMED, clock=clock)
        log.info(
            "  %s: %.3fs a step, %d steps an epoch: %s an epoch",
            net.shape,
            timings[net].step_seconds,
            timings[net].train_batches,
            tb.format_duration(timings[net].epoch_seconds),
        )
        del learn
    return tb.choose(
        budget_seconds,
        setup,
        timings,
        batch_size,
        t.seq_len,
        threads=threads if thread_steps else 0,
        thread_steps=thread_steps,
    )
