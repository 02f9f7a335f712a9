"""What `release init --time-budget` measures: the training rows tokenized as the build will,
a few real training steps of each candidate network timed on this machine now, and the recipe
that fits (`time_budget.choose`). Beside `time_budget`, which stays stdlib-only at import (the
config checks durations with it): this part needs torch, fastai and training's data loaders."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

from pipeline.dataset import LabelledTexts
from pipeline.training import (
    _classifier_dls,
    _classifier_learner,
    _tokenizer_options,
    training_device,
)

log = logging.getLogger("pipeline.train")


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
        threads, thread_steps = _fastest_threads(t, nets[-1], dls, work_dir, threads, clock)
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


def _fastest_threads(
    t: Any, smallest_net: Any, dls: Any, work_dir: Path, threads: int, clock: Any
) -> tuple[int, dict[int, float]]:
    """Which thread count trains fastest here, now (`threads` or 1), timed on the smallest
    network; torch is left set to it. Returns it and the seconds a step at each."""
    import dataclasses

    import torch

    from pipeline import time_budget as tb

    thread_steps: dict[int, float] = {}
    smallest = _classifier_learner(
        dataclasses.replace(
            t,
            emb_sz=smallest_net.emb_sz,
            n_hid=smallest_net.n_hid,
            n_layers=smallest_net.n_layers,
        ),
        dls,
        work_dir,
    )
    for n in (threads, 1):
        torch.set_num_threads(n)
        thread_steps[n] = tb.time_steps(smallest, steps=tb.STEPS_TIMED, clock=clock).step_seconds
    del smallest
    chosen = tb.fewer_threads_win(thread_steps)
    torch.set_num_threads(chosen)
    log.info(
        "threads: %s; training with %d",
        ", ".join(f"{n}: {sec:.3f}s a step" for n, sec in thread_steps.items()),
        chosen,
    )
    return chosen, thread_steps
