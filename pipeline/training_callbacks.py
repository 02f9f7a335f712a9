"""The fastai callbacks training adds, and `fit`, the one place they are put on a fit.

Progress lines with an ETA (`time_budget.Progress`), the time budget (stop at it) and keeping the
best epoch, the moving average of the weights (`train.ema_decay`), phrase dropout
(`train.phrase_dropout`, with `phrasing_words`) and unk dropout (`train.unk_dropout`); `estimate_fit`
times a few real steps before a fit and logs what it will take. Each callback is a fastai class
made inside its function (fastai is imported lazily) and is used only during fit: none ends up
in the exported pickle.
"""

from __future__ import annotations

import logging
import time
import warnings
from typing import Any

log = logging.getLogger("pipeline.train")


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


def weight_average_callback(decay: float) -> Any:
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


def phrase_dropout_callback(p: float, drop_ids: list[int], pad_idx: int, seq_len: int) -> Any:
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


def unk_dropout_callback(p: float, unk_idx: int, keep_ids: list[int]) -> Any:
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


def fit(
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


def estimate_fit(learn: Any, epochs: int, what: str, watch: Any = None) -> dict[str, Any]:
    """Time a few real steps (the weights and random states untouched) and log what the fit will
    take; with a budget, warn when it will not fit. Returns the numbers for the report."""
    from pipeline.time_budget import format_duration, time_steps

    if len(learn.dls.train) == 0:  # fewer rows than a batch: fastai drops the incomplete last one
        log.warning(
            "%s: no full training batch (%d training rows, batch size %d): nothing to time, and "
            "the fit will take no training step; lower train.batch_size or add rows",
            what,
            len(learn.dls.train_ds),
            learn.dls.train.bs,
        )
        return {"estimate_seconds": 0.0, "train_batches": 0}
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
