"""Labelled CSV files: read, check, and explain what is wrong with them."""

from __future__ import annotations

import csv
import io
import math
import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import InputError


@dataclass(frozen=True)
class LabelledTexts:
    """The rows of a labelled CSV, checked."""

    path: Path
    texts: tuple[str, ...]
    labels: tuple[str, ...]

    @property
    def classes(self) -> list[str]:
        return sorted(set(self.labels))

    def counts(self) -> Counter[str]:
        return Counter(self.labels)

    def __len__(self) -> int:
        return len(self.texts)


def read_labelled_csv(
    path: Path,
    text_column: str,
    label_column: str,
    *,
    min_classes: int = 2,
    config_name: str = "release.toml",
) -> LabelledTexts:
    """Read a CSV with a text and a label column.

    Raises:
        InputError: the file is missing, not UTF-8, not CSV, lacks a column, has an empty text or
            label, has no rows, or has fewer than `min_classes` labels. The message names the file,
            the row and what to do.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise InputError(
            f"{path}: line {line}: not UTF-8 (byte 0x{raw[e.start]:02x} at offset {e.start}); save the file as UTF-8"
        ) from e
    if not text.strip():
        raise InputError(
            f"{path}: the file is empty; expected a header row with {text_column!r} and {label_column!r}, then one row per example"
        )
    try:
        reader = csv.DictReader(io.StringIO(text, newline=""))
        header = reader.fieldnames or []
        missing = [c for c in (text_column, label_column) if c not in header]
        if missing:
            raise InputError(
                f"{path}: missing column{'s' if len(missing) > 1 else ''} {', '.join(map(repr, missing))}; "
                f"found columns {', '.join(map(repr, header))}; set data.text_column / data.label_column in {config_name}"
            )
        texts: list[str] = []
        labels: list[str] = []
        for row in reader:
            line = reader.line_num
            if None in row:
                raise InputError(extra_fields_message(path, line, len(header), row[None]))
            t, lab = (row.get(text_column) or "").strip(), (row.get(label_column) or "").strip()
            if not t:
                raise InputError(
                    f"{path}: line {line}: empty {text_column!r}; every row needs a text"
                )
            if not lab:
                raise InputError(
                    f"{path}: line {line}: empty {label_column!r}; every row needs a label"
                )
            texts.append(t)
            labels.append(lab)
    except csv.Error as e:
        raise InputError(f"{path}: not a readable CSV file: {e}") from e
    if not texts:
        raise InputError(f"{path}: a header but no rows; expected one row per labelled example")
    data = LabelledTexts(path, tuple(texts), tuple(labels))
    if len(data.classes) < min_classes:
        raise InputError(
            f"{path}: only {len(data.classes)} label ({', '.join(data.classes)}) in {len(texts)} rows; "
            f"a classifier needs at least {min_classes} different labels"
        )
    return data


def extra_fields_message(path: Path, line: int, n_header: int, extra: list[str]) -> str:
    """A row with more fields than the header: csv's DictReader would drop the extra ones and
    keep the row, so a label like `billing, urgent` without quotes trains as `billing`."""
    n = n_header + len(extra)
    return (
        f"{path}: line {line}: {n} fields, the header has {n_header} (extra: "
        f"{', '.join(repr(x) for x in extra[:3])}); a comma inside a text or label needs the "
        'field in double quotes ("billing, urgent"): quote it, or remove the extra field'
    )


def check_eval_against_train(train: LabelledTexts, eval_: LabelledTexts) -> None:
    """Eval labels must be known to the model, and eval texts must not leak from train.

    Raises:
        InputError: an eval label never occurs in train, or an eval text also occurs in train
            (case, spacing and punctuation aside).
    """
    _check_labels_known(eval_, train)
    _check_no_shared_text(eval_, train, "an eval set")


def _check_labels_known(held_out: LabelledTexts, train: LabelledTexts) -> None:
    unknown = sorted(set(held_out.labels) - set(train.labels))
    if unknown:
        raise InputError(
            f"{held_out.path}: label{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))} never occur in "
            f"{train.path} (its labels: {', '.join(train.classes)}); the model cannot predict them"
        )


_PUNCTUATION_AND_SPACE = re.compile(r"[\s\"'`.,;:!?()\[\]{}]+")


def same_text_key(text: str) -> str:
    """What two texts share when they are the same text: case, spacing and punctuation aside.

    "How big is the user community worldwide?" and "how big is the user community
    worldwide" have one key; "C++ api" and "C api" do not (only quotes, brackets and sentence
    punctuation are dropped).
    """
    return _PUNCTUATION_AND_SPACE.sub(" ", text.casefold()).strip()


def _check_no_shared_text(held_out: LabelledTexts, other: LabelledTexts, what: str) -> None:
    seen = {same_text_key(t) for t in other.texts}
    shared = [t for t in held_out.texts if same_text_key(t) in seen]
    if shared:
        way_out = (
            f"to train without them, `release init --csv {other.path} --eval-csv "
            f"{held_out.path} --drop-overlap` writes a copy of {other.path.name} without those "
            "rows and a config that trains on it (--force replaces an existing config; or pass "
            "--config NEW.toml); or remove them from one of the two files"
            if what == "an eval set"
            else "remove them from one of the two files"
        )
        raise InputError(
            f"{held_out.path}: {len(shared)} text(s) also in {other.path}, e.g. {shared[0]!r}; "
            f"{what} must be unseen text or its accuracy means nothing; {way_out}"
        )


def shared_text_rows(rows: list[str], held_out: list[str]) -> list[int]:
    """Indices of `rows` whose text is also in `held_out` (by `same_text_key`, the build's
    check): the rows `release init --drop-overlap` leaves out of the training CSV."""
    keys = {same_text_key(t) for t in held_out}
    return [i for i, t in enumerate(rows) if same_text_key(t) in keys]


def check_challenge(
    challenge: LabelledTexts, train: LabelledTexts | None, eval_: LabelledTexts
) -> None:
    """A challenge set must use known labels and share no text with the train or eval set.

    Raises:
        InputError: a challenge label never occurs in train, or a challenge text also occurs
            in the train or eval CSV (compared by `same_text_key`: case, spacing and
            punctuation aside).
    """
    if train is not None:
        _check_labels_known(challenge, train)
    for other in (x for x in (train, eval_) if x is not None):
        _check_no_shared_text(challenge, other, "a challenge set")


_WORD = re.compile(r"\w+")


def word_set(text: str) -> frozenset[str]:
    """The words of `text`, case aside: what `near_copies` compares."""
    return frozenset(_WORD.findall(text.casefold()))


class NearCopyIndex:
    """Texts indexed by word, to find which of them a held-out text nearly copies.

    Built once per set of texts (a build's training rows), asked once per held-out set.
    """

    def __init__(self, texts: tuple[str, ...] | list[str], threshold: float = 0.7):
        if not 0 < threshold <= 1:
            raise ValueError(f"threshold must be in (0, 1], not {threshold}")
        self.threshold = threshold
        self._texts = texts
        self._words = [word_set(t) for t in texts]
        self._df = Counter(w for ws in self._words for w in ws)
        self._postings: defaultdict[str, list[int]] = defaultdict(list)
        for i, ws in enumerate(self._words):
            for w in ws:
                self._postings[w].append(i)

    def near_copies(self, held_out: tuple[str, ...] | list[str]) -> list[tuple[str, str]]:
        """(held-out text, indexed text) pairs whose word sets overlap by the threshold or
        more (Jaccard: shared words / all words of the two), in held-out order.

        Prefix filtering keeps this near linear: two sets at Jaccard >= t share at least
        ceil(t * |A|) of A's words, so B holds one of A's |A| - ceil(t * |A|) + 1 rarest
        words; and t * |A| <= |B| <= |A| / t.
        """
        t = self.threshold
        pairs = []
        for text in held_out:
            words = word_set(text)
            if not words:
                continue
            rare_first = sorted(words, key=lambda w: (self._df.get(w, 0), w))
            prefix = rare_first[: len(words) - math.ceil(t * len(words) - 1e-9) + 1]
            low, high = t * len(words) - 1e-9, len(words) / t + 1e-9
            for i in sorted({i for w in prefix for i in self._postings.get(w, ())}):
                other = self._words[i]
                if low <= len(other) <= high and len(words & other) >= t * len(words | other):
                    pairs.append((text, self._texts[i]))
        return pairs


def near_copies(
    held_out: tuple[str, ...] | list[str],
    other: tuple[str, ...] | list[str],
    threshold: float = 0.7,
) -> list[tuple[str, str]]:
    """(held-out text, other text) pairs whose word sets overlap by `threshold` or more: a
    held-out text one word or a "?" away from a training text is scored as unseen but is not.
    See `NearCopyIndex` (build one to ask about several held-out sets)."""
    return NearCopyIndex(other, threshold).near_copies(held_out)
