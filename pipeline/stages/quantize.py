"""Stage: INT8 quantization of the stripped learner, exported as export_quantized.pkl."""

from __future__ import annotations

import logging
import warnings

from pipeline.quantization import detach_batch_state, quantize, select_engine
from pipeline.stages.base import BuildContext

log = logging.getLogger("pipeline.build")


# The attributes fastai's `Learner._end_cleanup` resets, with the values it resets them to, and
# the loss's gradient: the last batch, which is no part of the model.
_LAST_BATCH = {
    "dl": None,
    "xb": (None,),
    "yb": (None,),
    "pred": None,
    "loss": None,
    "loss_grad": None,
}


def export_learner(learn, path) -> None:  # noqa: ANN001
    """fastai's export without re-creating an optimizer afterwards, written atomically: no
    DataLoader with data, no optimizer, no last batch in the file.

    Pickled with `pipeline.stable_pickle`, so the same learner gives the same bytes in every
    process (sets in sorted order); the file loads with plain `load_learner`. Each empty
    DataLoader gets a fixed random-number generator: fastai seeds a new DataLoader's `rng` from
    the global `random` state, which a build that skips training never seeds, and a pickled
    generator that differs made an unchanged rebuild write other bytes. A loaded learner draws
    nothing from it (`test_dl` and `dls.new` make DataLoaders with generators of their own).
    """
    import random

    import torch

    from pipeline import stable_pickle

    dls, opt = learn.dls, learn.opt
    # what fastai's export clears (`_end_cleanup`): the last DataLoader and batch. After a
    # validation pass (the did-it-train check, keeping the best epoch) `learn.dl` is the
    # validation DataLoader over a DataFrame of held-out training rows: pickled, it shipped
    # them inside the released files.
    last = {k: getattr(learn, k, None) for k in _LAST_BATCH}
    # what callbacks keep of the last batch (fastai's RNNCallback `out`/`raw_out`) still holds
    # the training step's autograd graph after a fit without a validation pass, which pickling
    # refuses
    detach_batch_state(learn)
    learn.dls, learn.opt = dls.new_empty(), None
    for k, empty in _LAST_BATCH.items():
        setattr(learn, k, empty)
    for dl in learn.dls.loaders:
        dl.rng = random.Random(0)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with stable_pickle.spacy_stop_words_in_order(learn):
                torch.save(learn, tmp, pickle_module=stable_pickle, pickle_protocol=2)
        tmp.replace(path)
    finally:
        learn.dls, learn.opt = dls, opt
        for k, value in last.items():
            setattr(learn, k, value)
        tmp.unlink(missing_ok=True)


class Quantize:
    name = "quantizing"

    def skip_reason(self, ctx: BuildContext) -> str | None:
        return None

    def run(self, ctx: BuildContext) -> None:
        q = ctx.config.quantize
        ctx.engine = select_engine(q.engine)
        with warnings.catch_warnings():
            # torch deprecates its eager-mode quantized tensors in favour of torchao; they are
            # what the pinned torch ships and what load_learner needs: pinned in constraints.txt.
            warnings.filterwarnings(
                "ignore", message=r"torch\.quantize_per_tensor", category=UserWarning
            )
            ctx.quantized = quantize(ctx.stripped, q.modules)
        export_learner(ctx.quantized, ctx.quantized_path)
        ctx.results["quantize"] = {"engine": ctx.engine, "modules": list(q.modules)}
        log.info(
            "engine %s, modules %s: %s written (%.1f MB)",
            ctx.engine,
            ", ".join(q.modules),
            ctx.quantized_path.name,
            ctx.quantized_path.stat().st_size / 1e6,
        )
