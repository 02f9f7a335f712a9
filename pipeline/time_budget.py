"""Time budgets for training: "20m" -> seconds, step timing on this machine, a recipe that fits,
and the clock-driven decisions of the build's training callbacks (stop at the budget, ETA).

Stdlib only at import (config.py checks durations with it); torch and fastai are imported inside
the functions that time real training steps. Every decision that reads a clock takes the clock as
an argument, so the tests drive it without sleeping.
"""

from __future__ import annotations

import contextlib
import math
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

Clock = Callable[[], float]

_DURATION = re.compile(
    r"(?:(?P<h>\d+(?:\.\d+)?)h)?(?:(?P<m>\d+(?:\.\d+)?)m(?:in)?)?(?:(?P<s>\d+(?:\.\d+)?)s)?"
)
DURATION_SHAPE = 'a duration like "20m", "1h30m", "90s" or "1.5h"'


def parse_duration(text: str) -> float | None:
    """Seconds in a duration like "20m", "1h30m", "90s", "1.5h"; None when it is not one (or 0)."""
    m = _DURATION.fullmatch(text.strip().lower().replace(" ", ""))
    if not m or not any(m.groups()):
        return None
    seconds = sum(float(m[k] or 0) * mult for k, mult in (("h", 3600), ("m", 60), ("s", 1)))
    return seconds if seconds > 0 else None


def format_duration(seconds: float) -> str:
    """42s, 3m05s, 1h02m: what a person reads in a log line."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


# --- timing real training steps -----------------------------------------------------------------


@dataclass(frozen=True)
class StepTiming:
    """Measured cost of one training step and one validation forward pass of a learner."""

    step_seconds: (
        float  # forward + backward + optimizer step of one training batch (with its loading)
    )
    forward_seconds: float  # forward pass of one batch without gradients (validation)
    train_batches: int  # per epoch
    valid_batches: int  # per epoch (0 with valid_pct = 0)
    steps_timed: int = 0

    @property
    def epoch_seconds(self) -> float:
        return self.train_batches * self.step_seconds + self.valid_batches * self.forward_seconds


@contextlib.contextmanager
def rng_preserved(loaders: Any = ()) -> Iterator[None]:
    """Leave every random-number state (Python, numpy, torch, each fastai DataLoader's own) as it
    was: timing steps must not change what the training that follows computes."""
    import random

    import numpy as np
    import torch

    states = (random.getstate(), np.random.get_state(), torch.get_rng_state())
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    dl_states = [(dl, dl.rng.getstate()) for dl in loaders if hasattr(dl, "rng")]
    # fastai's language-model loader shuffles its texts in place (ReindexCollection.shuffle)
    lm_orders = [
        (dl, list(dl.items.idxs)) for dl in loaders if hasattr(getattr(dl, "items", None), "idxs")
    ]
    try:
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)
        for dl, st in dl_states:
            dl.rng = random.Random()  # DataLoader.randomize() replaced the object: restore a copy
            dl.rng.setstate(st)
            if hasattr(dl, "it"):  # a batch iteration left unfinished
                del dl.it
        for dl, order in lm_orders:
            # in place: the loader's `lens` shares this very index list with its `items`
            idxs = dl.items.idxs
            for i, v in enumerate(order):
                idxs[i] = v
            dl.make_chunks()


def _sync(device: Any) -> None:
    import torch

    if getattr(device, "type", "cpu") == "cuda":
        torch.cuda.synchronize(device)
    elif getattr(device, "type", "cpu") == "mps":
        torch.mps.synchronize()


def time_steps(
    learn: Any, steps: int = 4, warmup: int = 2, clock: Clock = time.perf_counter
) -> StepTiming:
    """Time `steps` real training steps (after `warmup`) of a fastai learner on its own batches.

    The steps train the learner's own model with a throwaway optimizer, and its weights, buffers
    and every random state are put back afterwards (`rng_preserved`): the training that follows
    computes exactly what it would have computed without the measurement.
    """
    import torch

    dls = learn.dls
    if len(dls.train) == 0:
        raise ValueError("no training batch to time (fewer rows than the batch size)")
    device = getattr(dls, "device", None) or torch.device("cpu")
    model = learn.model
    saved = {k: v.detach().clone() for k, v in model.state_dict().items()}
    was_training = model.training
    step_times: list[float] = []
    forward_times: list[float] = []
    with rng_preserved(dls.loaders):
        model.to(device)
        opt = torch.optim.Adam(model.parameters(), lr=1e-4)
        loss_func = learn.loss_func
        # an epoch shorter than asked for: time what there is, at least one step
        total = min(warmup + steps, len(dls.train))
        warmup = min(warmup, total - 1)
        batches = iter(dls.train)
        try:
            for i in range(total):
                t0 = clock()
                xb, yb = next(batches)
                model.train()
                if hasattr(model, "reset"):
                    model.reset()
                out = model(xb)
                loss = loss_func(out[0] if isinstance(out, tuple) else out, yb)
                loss.backward()
                opt.step()
                opt.zero_grad()
                _sync(device)
                t1 = clock()
                model.eval()
                with torch.no_grad():
                    if hasattr(model, "reset"):
                        model.reset()
                    model(xb)
                _sync(device)
                t2 = clock()
                if i >= warmup:
                    step_times.append(t1 - t0)
                    forward_times.append(t2 - t1)
        finally:
            del batches, opt
            model.load_state_dict(saved)
            if hasattr(model, "reset"):
                model.reset()
            model.train(was_training)
    return StepTiming(
        step_seconds=sorted(step_times)[len(step_times) // 2],
        forward_seconds=sorted(forward_times)[len(forward_times) // 2],
        train_batches=len(dls.train),
        valid_batches=len(dls.valid) if len(dls.loaders) > 1 else 0,
        steps_timed=len(step_times),
    )


# --- the budget during a build ------------------------------------------------------------------


@dataclass
class BudgetWatch:
    """The clock side of `train.time_budget` during one fit: when to stop, and the ETA.

    The build stops after an epoch when the next one would end past the budget (judged by the
    slowest epoch so far), and inside an epoch when the budget is spent (that epoch is then
    validated as it stands). Either way the best epoch so far is what the build exports.
    """

    budget_seconds: float
    clock: Clock = time.monotonic
    started: float | None = None
    epoch_seconds: list[float] = field(default_factory=list)
    stopped: str = ""  # why the fit was stopped early ("" while it was not)

    def start(self) -> None:
        if self.started is None:
            self.started = self.clock()

    @property
    def elapsed(self) -> float:
        return 0.0 if self.started is None else self.clock() - self.started

    @property
    def remaining(self) -> float:
        return self.budget_seconds - self.elapsed

    def spent(self) -> bool:
        """Inside an epoch: the budget is used up (stop training this epoch now)."""
        if self.elapsed >= self.budget_seconds:
            self.stopped = (
                f"the time budget ({format_duration(self.budget_seconds)}) ran out inside an epoch"
            )
            return True
        return False

    def end_epoch(self, seconds: float, epochs_done: int, epochs_planned: int) -> bool:
        """After an epoch of `seconds`: True when the fit should stop (the next would not fit)."""
        self.epoch_seconds.append(seconds)
        if self.stopped:
            return True
        if epochs_done >= epochs_planned:
            return False
        need = max(self.epoch_seconds)
        if self.elapsed + need > self.budget_seconds:
            self.stopped = (
                f"another epoch (~{format_duration(need)}) would end past the time budget "
                f"({format_duration(self.elapsed)} of {format_duration(self.budget_seconds)} used)"
            )
            return True
        return False


@dataclass
class Progress:
    """Log lines inside an epoch: every `every` seconds, the batch count, the epoch's ETA and the
    whole fit's ETA. No control characters: it is for logs and terminals alike."""

    epochs: int
    every: float = 30.0
    clock: Clock = time.monotonic
    fit_started: float = 0.0
    epoch_started: float = 0.0
    last_line: float = 0.0
    epoch_seconds: list[float] = field(default_factory=list)

    def start_fit(self) -> None:
        self.fit_started = self.epoch_started = self.last_line = self.clock()

    def start_epoch(self) -> None:
        self.epoch_started = self.last_line = self.clock()

    def end_epoch(self) -> float:
        seconds = self.clock() - self.epoch_started
        self.epoch_seconds.append(seconds)
        return seconds

    def line(self, epoch: int, batch: int, batches: int) -> str | None:
        """The progress line after `batch` of `batches` in `epoch` (0-based), or None if not due."""
        now = self.clock()
        if now - self.last_line < self.every or not 0 < batch < batches:
            return None
        self.last_line = now
        spent = now - self.epoch_started
        epoch_eta = spent / batch * (batches - batch)
        per_epoch = max(self.epoch_seconds) if self.epoch_seconds else spent / batch * batches
        fit_eta = epoch_eta + per_epoch * (self.epochs - epoch - 1)
        return (
            f"epoch {epoch + 1}/{self.epochs}: batch {batch}/{batches} "
            f"({100 * batch / batches:.0f}%), {spent / batch:.2f}s a batch, this epoch ends in "
            f"~{format_duration(epoch_eta)}, all epochs in ~{format_duration(fit_eta)}"
        )


# --- what `release init --time-budget` chooses ---------------------------------------------------


@dataclass(frozen=True)
class Network:
    """A candidate AWD_LSTM shape for training from scratch, with its measured learning rate."""

    emb_sz: int
    n_hid: int
    n_layers: int
    lr: float
    min_epochs: int  # fewer than this and a smaller network learns more in the same time
    max_epochs: int  # more than this gained nothing measurable (benchmarks/clinc150.jsonl)
    # the size and speed gates for it: quantizing a small network shrinks and speeds up its
    # network less than the demo's (benchmarks/gate_ratios.jsonl), so init writes these
    min_size_ratio: float = 5.0
    min_speedup: float = 4.0
    # regularization written with it: the demo's settings, which also lifted CLINC150
    # (benchmarks/clinc150.jsonl, L7 against L1)
    drop_mult: float = 0.5
    label_smoothing: float = 0.1
    word_dropout: float = 0.2

    @property
    def shape(self) -> str:
        return f"{self.emb_sz}/{self.n_hid}/{self.n_layers}"


@dataclass(frozen=True)
class Plan:
    """A recipe that fits the budget, and the measurements it rests on (for the config comment)."""

    budget_seconds: float
    network: Network
    epochs: int
    batch_size: int
    seq_len: int
    timing: StepTiming
    setup_seconds: float  # reading and tokenizing the rows, building the learner
    timings: dict[str, StepTiming]  # every candidate measured, by shape
    notes: tuple[str, ...] = ()
    threads: int = 0  # 0: train.threads' default (every core)
    thread_steps: dict[int, float] = field(default_factory=dict)  # threads -> s a step measured

    @property
    def estimate_seconds(self) -> float:
        return self.setup_seconds + self.epochs * self.timing.epoch_seconds


STEPS_TIMED = 4  # training steps timed per candidate network (after 2 warm-up steps)

# The candidates `release init --time-budget` measures, largest first, with what was measured
# for them on CLINC150 (benchmarks/clinc150.jsonl, val split; docs/training-budget.md) and the
# demo data (benchmarks/levers.jsonl):
# - 200/400/2 learns in 2 epochs (88.7%) and reaches the TF-IDF baseline in 10 at lr 0.01 with
#   the demo's regularization (92.6% against 92.5%); 20 epochs gained nothing over 10 (91.4%
#   against 91.3%), so 15 is its cap (more room for data smaller than CLINC150's 15,000 rows);
#   lr 0.005 did worse (L2, L8); lr_find suggested 0.0012 (valley) to 0.058 (steep). Quantized, its network is 5.0-5.1x smaller and
#   2.3-2.7x faster (benchmarks/gate_ratios.jsonl): gates at 4.0 and 1.5.
# - 400/1152/3 (fastai's WT103 shape, the demo's) costs 5-8x the time per epoch: 2 of its epochs
#   (83.9%) took 2.3x the CPU time of 10 of the small one's; it is chosen only when the budget
#   fits 10 of its epochs. Its gates are the defaults (5.0 and 4.0: measured 5.9x and 6.7-10.9x).
CANDIDATES = (
    Network(400, 1152, 3, lr=0.005, min_epochs=10, max_epochs=30),
    Network(200, 400, 2, lr=0.01, min_epochs=2, max_epochs=15, min_size_ratio=4.0, min_speedup=1.5),
)


def fewer_threads_win(steps: dict[int, float]) -> int:
    """The thread count to train with, from seconds a step measured at each count: the fewest
    threads within 10% of the fastest (on a busy machine, one thread per process is often the
    fastest: threads that wait for each other wait for the other processes too)."""
    best = min(steps.values())
    return min(n for n, sec in steps.items() if sec <= 1.1 * best)


def batch_size_for(rows: int) -> int:
    """64 rows a step once there are enough rows for it (about 1.4x faster epochs on 2 cores than
    32, same accuracy on the demo data), else 32."""
    return 64 if rows >= 2000 else 32


# Use this share of the budget for the planned epochs: a shared machine's speed varies, and the
# build stops at the budget anyway (keeping the best epoch), so the plan leaves room.
PLAN_SHARE = 0.85


def choose(
    budget_seconds: float,
    setup_seconds: float,
    timings: dict[Network, StepTiming],
    batch_size: int,
    seq_len: int,
    threads: int = 0,
    thread_steps: dict[int, float] | None = None,
) -> Plan:
    """The largest candidate network that gets its `min_epochs` within the budget, with as many
    epochs as fit (up to its `max_epochs`); failing that, the smallest with what fits (at least 1).

    `timings` lists the candidates from the largest to the smallest.
    """
    usable = budget_seconds * PLAN_SHARE - setup_seconds
    nets = list(timings)
    notes: list[str] = []
    chosen = None
    for net in nets:
        fit = math.floor(usable / timings[net].epoch_seconds) if usable > 0 else 0
        if fit >= net.min_epochs:
            chosen, epochs = net, min(fit, net.max_epochs)
            break
    if chosen is None:
        chosen = nets[-1]
        fit = math.floor(usable / timings[chosen].epoch_seconds) if usable > 0 else 0
        epochs = max(1, fit)
        notes.append(
            f"the budget fits {fit} epoch(s) of the smallest network ({chosen.shape}), fewer than "
            f"the {chosen.min_epochs} it needs to learn well: give a larger --time-budget"
        )
    return Plan(
        budget_seconds=budget_seconds,
        network=chosen,
        epochs=epochs,
        batch_size=batch_size,
        seq_len=seq_len,
        timing=timings[chosen],
        setup_seconds=setup_seconds,
        timings={n.shape: t for n, t in timings.items()},
        notes=tuple(notes),
        threads=threads,
        thread_steps=dict(thread_steps or {}),
    )
