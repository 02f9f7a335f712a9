"""Accuracy, agreement and probability differences of classifier variants on a labelled set."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Predictions:
    labels: list[str]
    probs: np.ndarray  # (n, n_classes), classes in the learner's order


def predict_all(learn: Any, texts: list[str], batch_size: int = 64) -> Predictions:
    """Batched predictions in the input order (fastai sorts text batches by length; reordered
    back), equal to `learn.predict` one text at a time.

    fastai's SentenceEncoder reads a batch in `seq_len` slices and assumes every row's text
    starts on a slice boundary; its padding breaks that when a batch mixes texts that differ by
    `seq_len` tokens or more, and a short text then loses its words (fastai issue #3379). Such
    texts go into separate batches (`length_groups`).
    """
    import torch

    dl = learn.dls.test_dl(texts, bs=batch_size, num_workers=0)
    seq_len = getattr(learn.model[0], "bptt", None)
    lengths = getattr(dl, "res", None)
    groups = (
        length_groups(lengths, seq_len)
        if seq_len and lengths is not None and len(lengths) == len(texts)
        else [list(range(len(texts)))]
    )
    with learn.no_bar(), torch.inference_mode():
        if len(groups) == 1:
            probs, _ = learn.get_preds(dl=dl, reorder=True)
        else:
            parts = {}
            for group in groups:
                sub = learn.dls.test_dl([texts[i] for i in group], bs=batch_size, num_workers=0)
                p, _ = learn.get_preds(dl=sub, reorder=True)
                parts.update(zip(group, p, strict=True))
            probs = torch.stack([parts[i] for i in range(len(texts))])
    classes = [str(c) for c in learn.dls.vocab[1]]
    probs = probs.float().numpy()
    return Predictions([classes[i] for i in probs.argmax(1)], probs)


def length_groups(lengths: list[int], seq_len: int) -> list[list[int]]:
    """Indices of `lengths` in groups whose longest and shortest differ by less than `seq_len`
    (longest first): the batches fastai's chunked SentenceEncoder reads as one text at a time."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    groups: list[list[int]] = []
    for i in order:
        if groups and lengths[groups[-1][0]] - lengths[i] < seq_len:
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


def accuracy(pred: list[str], truth: list[str]) -> float:
    return float(np.mean([p == t for p, t in zip(pred, truth, strict=True)]))


def per_class_accuracy(pred: list[str], truth: list[str], classes: list[str]) -> dict[str, float]:
    out = {}
    for c in classes:
        idx = [i for i, t in enumerate(truth) if t == c]
        out[c] = float(np.mean([pred[i] == c for i in idx])) if idx else float("nan")
    return out


def confusion(pred: list[str], truth: list[str], classes: list[str]) -> list[list[int]]:
    """Rows: true class, columns: predicted class."""
    pos = {c: i for i, c in enumerate(classes)}
    m = [[0] * len(classes) for _ in classes]
    for p, t in zip(pred, truth, strict=True):
        m[pos[t]][pos[p]] += 1
    return m


def top_confusions(
    confusions: dict[str, list[list[int]]], classes: list[str], k: int, by: str = "quantized"
) -> list[dict[str, Any]]:
    """The `k` most frequent (true, predicted) mistakes of variant `by`, with each variant's
    count for the pair and the share of the true class's texts it takes (ties by name)."""
    m = confusions[by]
    pairs = [
        (m[i][j], classes[i], classes[j], i, j)
        for i in range(len(classes))
        for j in range(len(classes))
        if i != j and m[i][j] > 0
    ]
    pairs.sort(key=lambda x: (-x[0], x[1], x[2]))
    out = []
    for n, true, predicted, i, j in pairs[:k]:
        row: dict[str, Any] = {"true": true, "predicted": predicted}
        row.update({name: c[i][j] for name, c in confusions.items()})
        row["share_of_true"] = n / max(1, sum(m[i]))
        out.append(row)
    return out


def compare(a: Predictions, b: Predictions) -> dict[str, float]:
    """Top-1 agreement and probability differences of two variants on the same texts."""
    diff = np.abs(a.probs - b.probs)
    return {
        "agreement": float(np.mean([x == y for x, y in zip(a.labels, b.labels, strict=True)])),
        "mean_prob_diff": float(diff.mean()),
        "max_prob_diff": float(diff.max()),
    }


def paired(model: list[str], baseline: list[str], truth: list[str]) -> dict[str, float]:
    """Two classifiers text by text: who alone is right, and whether that can be chance.

    `p_value` is the exact two-sided McNemar test (a binomial test on the texts exactly one of
    the two answers right): above 0.05, the set is too small to tell the two apart.
    """
    from scipy.stats import binomtest

    pairs = list(zip(model, baseline, truth, strict=True))
    model_only = sum(m == t != b for m, b, t in pairs)
    baseline_only = sum(b == t != m for m, b, t in pairs)
    split = model_only + baseline_only
    return {
        "both_right": sum(m == t == b for m, b, t in pairs),
        "model_only_right": model_only,
        "baseline_only_right": baseline_only,
        "both_wrong": sum(m != t and b != t for m, b, t in pairs),
        "p_value": float(binomtest(model_only, split, 0.5).pvalue) if split else 1.0,
    }


def tfidf_baseline(
    train_texts: list[str], train_labels: list[str], eval_texts: list[str], seed: int
) -> list[str]:
    """Predictions of a TF-IDF (words + character n-grams) logistic regression: the bar to beat."""
    model = fit_tfidf_baseline(train_texts, train_labels, seed)
    return [str(x) for x in model.predict(eval_texts)]


def fit_tfidf_baseline(train_texts: list[str], train_labels: list[str], seed: int) -> Any:
    """The TF-IDF + logistic regression baseline fitted on the training rows (`.predict(texts)`):
    fitted once per build, asked for the eval and the challenge set."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline, make_union

    model = make_pipeline(
        make_union(
            TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True),
            TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True),
        ),
        LogisticRegression(C=10, max_iter=2000, random_state=seed),
    )
    model.fit(train_texts, train_labels)
    return model


# --- "did it learn anything?": one rule, asked after training and again at validation --------

# Without a baseline, the model must close at least this share of the gap between chance and a
# perfect score (and its loss must fall below NEAR_UNIFORM_LOSS of a uniform guess's)...
NEAR_CHANCE_LEAD = 0.05
NEAR_UNIFORM_LOSS = 0.9
# ... with one well above chance, this share of the gap between chance and the baseline.
BASELINE_LEAD = 0.1


def mean_log_loss(probs: Any, truth: list[int]) -> float:
    """Cross-entropy of the probabilities (rows: texts) at the true class indices, unsmoothed
    (a label-smoothed training loss would not compare with ln of the number of classes)."""
    p = np.asarray(probs)[np.arange(len(truth)), truth]
    return float(-np.log(np.clip(p, 1e-12, 1.0)).mean())


def training_verdict(
    accuracy: float,
    loss: float,
    n_classes: int,
    majority: float | None,
    baseline: float | None = None,
) -> dict[str, Any]:
    """Whether a classifier learnt anything, from its accuracy and (unsmoothed) loss on held-out
    texts: the same rule after training (held-out training rows: the build stops before
    quantizing) and at validation (the eval set: the report and the gates' advice say so).

    Chance is the better of the majority class and 1 / classes, a uniform guess's loss is
    ln(classes). With a baseline well above chance (the TF-IDF one, at validation), the model
    did not train when it closes less than BASELINE_LEAD of the way from chance to it; without
    one, when its loss is NEAR_UNIFORM_LOSS of a uniform guess's or more and its accuracy closes
    less than NEAR_CHANCE_LEAD of the way from chance to 100%. Issue 30's run: two epochs of
    fit_one_cycle at lr 0.01, 1.7% where chance was about 1.3% (so about 77 classes, whose
    uniform guess's loss is ln 77 = 4.34), at a loss of 4.39.
    """
    chance_loss = float(np.log(n_classes)) if n_classes > 1 else 0.0
    chance = max(majority or 0.0, 1 / max(1, n_classes))
    if baseline is not None and baseline > chance + 0.05:
        stuck = accuracy - chance < BASELINE_LEAD * (baseline - chance)
    else:
        near = chance >= 1.0 or accuracy - chance < NEAR_CHANCE_LEAD * (1.0 - chance)
        stuck = near and loss >= NEAR_UNIFORM_LOSS * chance_loss
    return {
        "loss": loss,
        "chance_loss": chance_loss,
        "chance_accuracy": chance,
        "did_not_train": bool(stuck and n_classes > 1),
    }


def did_not_train_message(
    accuracy: float,
    loss: float,
    chance_loss: float,
    chance_accuracy: float,
    where: str,
    advice: str,
) -> str:
    """The one sentence the build says when a model learnt nothing (`where`: "eval" or what the
    held-out rows were; `advice`: what to change)."""
    return (
        f"the model did not train: {where} loss {loss:.2f} against {chance_loss:.2f} for a "
        f"uniform guess, accuracy {100 * accuracy:.1f}% against {100 * chance_accuracy:.1f}% by "
        f"chance; {advice}"
    )


def untrained_advice(train: Any = None) -> str:
    """What to change when the model did not train (`train`: the build's [train] settings,
    named with their values; None: in general)."""
    if train is not None and train.export_pkl is not None:
        return "it was loaded from train.export_pkl: train it longer or check its labels"
    return (
        "more epochs"
        + (f" (train.epochs = {train.epochs} now)" if train is not None else "")
        + " or a learning rate that suits that many epochs"
        + (f" (train.lr = {train.lr:g} now)" if train is not None else "")
    )
