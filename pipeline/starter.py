"""`release init`: a commented starter release.toml for a user's own CSV or export.pkl.

It looks at the data the way a user would have to: which column holds the text and which the
label, how many rows and classes there are, and, when there is no held-out eval CSV, carves one
(stratified by label, no text in both files). Remote repositories are written as placeholders
that `release publish` refuses until the user sets them. `--time-budget` (the measurement and the
recipe it writes) is `starter_budget`'s.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline import atomic
from pipeline.config import placeholder_repo, starter_toml
from pipeline.dataset import extra_fields_message, same_text_key, shared_text_rows
from pipeline.errors import ConfigError, InputError
from pipeline.starter_budget import budget_recipe, budget_seconds, measure_plan

log = logging.getLogger("pipeline.init")

TEXT_HINTS = (
    "text", "question", "query", "sentence", "utterance", "message", "body", "content",
    "review", "comment", "title", "description", "prompt",
)  # fmt: skip
LABEL_HINTS = (
    "label", "labels", "intent", "category", "class", "target", "tag", "topic", "sentiment", "y",
)  # fmt: skip
DEFAULT_EVAL_FRACTION = 0.2
DROPPED_LISTED = 20  # rows `--drop-overlap` lists in the log (all of them are counted)


@dataclass
class Table:
    """A CSV read whole: its header and rows (dicts), for column detection and splitting."""

    path: Path
    header: list[str]
    rows: list[dict[str, str]]


@dataclass
class Starter:
    """What `release init` found and wrote."""

    config_path: Path
    text_column: str
    label_column: str
    train_counts: Counter[str] = field(default_factory=Counter)
    eval_counts: Counter[str] = field(default_factory=Counter)
    train_csv: Path | None = None
    eval_csv: Path | None = None
    carved: bool = False
    learner_classes: list[str] | None = None
    onnx_note: str = ""
    notes: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)  # training texts also in the eval CSV, dropped
    source_csv: Path | None = None  # the CSV the train file was written from (carved or dropped)
    plan: Any = None  # time_budget.Plan when --time-budget was given
    budget: str = ""
    measured: str = ""  # when and under what load the plan was measured


def read_table(path: Path) -> Table:
    """Read a CSV file whole.

    Raises:
        InputError: missing, not UTF-8, not CSV, or without rows.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: not UTF-8 (offset {e.start}); save the file as UTF-8") from e
    try:
        reader = csv.DictReader(io.StringIO(text, newline=""))
        rows = []
        for r in reader:
            if None in r:
                n = len(reader.fieldnames or [])
                raise InputError(extra_fields_message(path, reader.line_num, n, r[None]))
            rows.append(dict(r))
    except csv.Error as e:
        raise InputError(f"{path}: not a readable CSV file: {e}") from e
    if not reader.fieldnames or not rows:
        raise InputError(f"{path}: expected a header row and one row per labelled example")
    return Table(path, list(reader.fieldnames), rows)


def _values(table: Table, column: str) -> list[str]:
    return [(r.get(column) or "").strip() for r in table.rows]


def detect_columns(
    table: Table, text_column: str | None = None, label_column: str | None = None
) -> tuple[str, str]:
    """The text and label columns: as given, else by name, else by shape.

    The label column has few distinct values (2 up to half the rows); the text column has the
    longest values among the rest.

    Raises:
        InputError: a given column is missing, or no column fits (names the columns found and
            the options to pass).
    """
    cols = table.header
    found = ", ".join(map(repr, cols))
    for given, opt in ((text_column, "--text-column"), (label_column, "--label-column")):
        if given is not None and given not in cols:
            raise InputError(f"{table.path}: {opt} {given!r}: no such column (found {found})")
    n = len(table.rows)

    def distinct(c: str) -> int:
        return len({v for v in _values(table, c) if v})

    if label_column is None:
        candidates = [c for c in cols if c != text_column and 2 <= distinct(c) <= max(2, n // 2)]
        named = [c for c in candidates if c.strip().lower() in LABEL_HINTS]
        pool = named or candidates
        if not pool:
            raise InputError(
                f"{table.path}: no column looks like a label (2 to {max(2, n // 2)} distinct "
                f"values) among {found}; pass --label-column NAME"
            )
        label_column = min(pool, key=distinct)
    if text_column is None:
        rest = [c for c in cols if c != label_column]
        named = [c for c in rest if c.strip().lower() in TEXT_HINTS]
        pool = named or rest
        if not pool:
            raise InputError(
                f"{table.path}: no column left for the text (found {found}); pass --text-column NAME"
            )

        def mean_len(c: str) -> float:
            return sum(len(v) for v in _values(table, c)) / max(1, n)

        text_column = max(pool, key=mean_len)
    if text_column == label_column:
        raise InputError(f"{table.path}: the text and label columns must differ ({text_column!r})")
    return text_column, label_column


def carve_eval(
    table: Table, text_column: str, label_column: str, fraction: float, seed: int = 42
) -> tuple[list[dict[str, str]], list[dict[str, str]], list[str]]:
    """Split rows into train and eval, stratified by label; a text never in both (case, spacing
    and punctuation aside: `dataset.same_text_key`, the build's own check).

    Rows with an empty text or label are dropped (and counted in the notes). A class with fewer
    than 2 distinct texts stays in train only. Returns (train rows, eval rows, notes).
    """
    notes = []
    groups: dict[str, list[dict[str, str]]] = defaultdict(list)
    dropped = 0
    for r in table.rows:
        t, lab = (r.get(text_column) or "").strip(), (r.get(label_column) or "").strip()
        if not t or not lab:
            dropped += 1
            continue
        groups[same_text_key(t)].append(r)
    if dropped:
        notes.append(f"{dropped} rows with an empty text or label were left out")
    by_label: dict[str, list[str]] = defaultdict(list)
    for key, rows in groups.items():
        by_label[rows[0][label_column].strip()].append(key)
    rng = random.Random(seed)
    eval_keys: set[str] = set()
    for label, keys in sorted(by_label.items()):
        if len(keys) < 2:
            notes.append(f"class {label!r} has {len(keys)} distinct text: kept in train only")
            continue
        k = min(len(keys) - 1, max(1, round(fraction * len(keys))))
        keys = sorted(keys)
        rng.shuffle(keys)
        eval_keys.update(keys[:k])
    train = [r for key, rows in groups.items() if key not in eval_keys for r in rows]
    eval_ = [r for key, rows in groups.items() if key in eval_keys for r in rows]
    return train, eval_, notes


def _label_counts(rows: list[dict[str, str]], column: str) -> Counter[str]:
    return Counter(v for r in rows if (v := (r.get(column) or "").strip()))


def _write_csv(path: Path, header: list[str], rows: list[dict[str, str]]) -> None:
    out = io.StringIO(newline="")
    w = csv.DictWriter(out, fieldnames=header, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    atomic.write_text(path, out.getvalue())


def _rel(path: Path, base: Path) -> str:
    return Path(os.path.relpath(Path(path).resolve(), base.resolve())).as_posix()


def _model_name(stem: str) -> str:
    for suffix in ("-train", "_train", ".train"):
        stem = stem.removesuffix(suffix)
    name = "".join(c if c.isalnum() or c in "._-" else "-" for c in stem).strip(".-_") or "model"
    return name[:96]


def _learner_facts(path: Path) -> tuple[list[str], str, int]:
    """Classes, onnx support note and vocabulary size of an export.pkl (refused learners raise)."""
    from pipeline.learner_file import labels_of, load_exported
    from pipeline.onnx_export import unsupported_reason

    learn = load_exported(path)
    why = unsupported_reason(learn)
    note = "supported" if why is None else f"not supported ({why})"
    return labels_of(learn), note, len(learn.dls.vocab[0])


def init_config(
    config_path: Path,
    *,
    csv_path: Path | None = None,
    eval_csv: Path | None = None,
    export_pkl: Path | None = None,
    name: str | None = None,
    text_column: str | None = None,
    label_column: str | None = None,
    eval_fraction: float = DEFAULT_EVAL_FRACTION,
    force: bool = False,
    drop_overlap: bool = False,
    time_budget: str | None = None,
    measure: Any = None,
) -> Starter:
    """Look at the data, carve an eval CSV when needed, and write a commented starter config.

    With an eval CSV of its own, training rows whose text is also in it (case, spacing and
    punctuation aside) make `release build` refuse the data: `drop_overlap` writes
    `<csv stem>-no-overlap.csv` without them (counted and listed in `Starter.dropped`) and the
    config trains on it; without it they are a note saying so.

    With `time_budget` ("20m"), the training rows are tokenized and a few real training steps
    of each candidate network are timed on this machine (`measure`, default
    `time_budget_measure.measure_for_budget`), and the [train] section gets the recipe that
    fits, with the measurement in a comment, and [validate] that network's size and speed gates.

    Raises:
        ConfigError: the config file exists (without `force`), no data was given, a file to
            write exists (without `force`), `drop_overlap` with a trained learner, or a time
            budget that is not a duration (or comes with --export-pkl, which trains nothing).
        InputError: a CSV or the export.pkl cannot be used (the message says what to do).
    """
    config_path = Path(config_path)
    _check_arguments(config_path, csv_path, eval_csv, export_pkl, eval_fraction, force)
    seconds = budget_seconds(time_budget, csv_path, export_pkl)
    if drop_overlap and export_pkl is not None:
        raise ConfigError(
            f"--drop-overlap: {export_pkl} has already trained on its rows, so dropping rows from "
            "the train CSV changes nothing it learnt; pass an --eval-csv of texts it never saw"
        )
    main = read_table(csv_path) if csv_path else read_table(eval_csv)  # type: ignore[arg-type]
    text_column, label_column = detect_columns(main, text_column, label_column)
    s = Starter(config_path, text_column, label_column)
    train_rows, eval_rows = _split(s, main, csv_path, eval_csv, eval_fraction, force)
    if csv_path is not None and eval_csv is not None:
        train_rows = _without_overlap(s, main, train_rows, eval_rows, drop_overlap, force)
    s.train_counts = _label_counts(train_rows, label_column)
    s.eval_counts = _label_counts(eval_rows, label_column)
    vocab_note = ""
    if export_pkl is not None:
        s.learner_classes, s.onnx_note, vocab = _learner_facts(export_pkl)
        vocab_note = f", vocabulary {vocab}"
        unknown = sorted(set(s.eval_counts) - set(s.learner_classes))
        if unknown:
            raise InputError(
                f"{eval_csv}: labels {', '.join(unknown)} are not among the learner's classes "
                f"({', '.join(s.learner_classes)}); the eval CSV must use the learner's labels"
            )
    model = _model_name(
        name
        or (
            Path(export_pkl).parent.name
            if export_pkl and not csv_path
            else Path(csv_path or eval_csv).stem
        )
    )  # type: ignore[arg-type]
    base = config_path.resolve().parent
    if seconds is not None:
        s.budget = (time_budget or "").strip()
        s.plan, s.measured = measure_plan(s, seconds, config_path, measure)
    atomic.write_text(config_path, _render(s, base, model, export_pkl, vocab_note))
    return s


def _check_arguments(
    config_path: Path,
    csv_path: Path | None,
    eval_csv: Path | None,
    export_pkl: Path | None,
    eval_fraction: float,
    force: bool,
) -> None:
    """Refuse what `init_config` cannot do, before reading anything."""
    if config_path.exists() and not force:
        raise ConfigError(
            f"{config_path}: already exists; pass --force to overwrite it, or --config OTHER.toml"
        )
    if csv_path is None and eval_csv is None:
        raise ConfigError(
            "release init: pass --csv YOUR.csv (labelled rows), with --export-pkl for a trained learner"
        )
    if not 0.05 <= eval_fraction <= 0.5:
        raise ConfigError(
            f"--eval-fraction: expected a number between 0.05 and 0.5, found {eval_fraction}"
        )
    if export_pkl is not None and eval_csv is None:
        raise InputError(
            f"{export_pkl}: release init cannot carve an eval set for a trained learner, since it "
            "cannot tell which rows the learner saw: pass --eval-csv with rows it never trained "
            "on; if you have none, run `release init --csv ALL.csv` first (it splits ALL.csv into "
            "a train and an eval file) and train on the train file"
        )


def _split(
    s: Starter,
    main: Table,
    csv_path: Path | None,
    eval_csv: Path | None,
    eval_fraction: float,
    force: bool,
) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """The train and eval rows: carved from `main` (and written) when there is no eval CSV."""
    if csv_path is not None and eval_csv is None:
        train_rows, eval_rows, s.notes = carve_eval(
            main, s.text_column, s.label_column, eval_fraction
        )
        stem = Path(csv_path).stem
        s.train_csv = Path(csv_path).with_name(f"{stem}-train.csv")
        s.eval_csv = Path(csv_path).with_name(f"{stem}-eval.csv")
        for p in (s.train_csv, s.eval_csv):
            if p.exists() and not force:
                raise ConfigError(
                    f"{p}: already exists; pass --force to overwrite it, or --eval-csv it"
                )
        _write_csv(s.train_csv, main.header, train_rows)
        _write_csv(s.eval_csv, main.header, eval_rows)
        s.carved = True
        return train_rows, eval_rows
    s.train_csv = csv_path
    s.eval_csv = eval_csv
    eval_table = read_table(eval_csv)  # type: ignore[arg-type]
    missing = [c for c in (s.text_column, s.label_column) if c not in eval_table.header]
    if missing:
        raise InputError(
            f"{eval_csv}: missing column(s) {missing}; it needs the same columns as {csv_path}"
        )
    return (main.rows if csv_path else []), eval_table.rows


def _without_overlap(
    s: Starter,
    train: Table,
    train_rows: list[dict[str, str]],
    eval_rows: list[dict[str, str]],
    drop: bool,
    force: bool,
) -> list[dict[str, str]]:
    """The training rows, less those whose text is also in the eval CSV when `drop` (written
    to `<stem>-no-overlap.csv`, which the config then names); a note either way."""
    col = s.text_column
    shared = shared_text_rows(
        [(r.get(col) or "").strip() for r in train_rows],
        [(r.get(col) or "").strip() for r in eval_rows],
    )
    if not shared:
        return train_rows
    texts = [(train_rows[i].get(col) or "").strip() for i in shared]
    if not drop:
        s.notes.append(
            f"{len(shared)} training row(s) share their text with {s.eval_csv} (e.g. "
            f"{texts[0]!r}): `release build` refuses such data; rerun init with --drop-overlap "
            "to train without them"
        )
        return train_rows
    out = train.path.with_name(f"{train.path.stem}-no-overlap.csv")
    if out.exists() and not force:
        raise ConfigError(f"{out}: already exists; pass --force to overwrite it")
    gone = set(shared)
    kept = [r for i, r in enumerate(train_rows) if i not in gone]
    _write_csv(out, train.header, kept)
    s.dropped, s.source_csv, s.train_csv = texts, train.path, out
    return kept


def _render(s: Starter, base: Path, model: str, export_pkl: Path | None, vocab_note: str) -> str:
    """The starter: every key of the config declaration, the ones this data decides set."""
    classes = sorted(set(s.train_counts) | set(s.eval_counts))
    n_train, n_eval = sum(s.train_counts.values()), sum(s.eval_counts.values())
    majority = max(s.eval_counts.values()) / n_eval if n_eval else 0.0
    when = datetime.now(UTC).strftime("%Y-%m-%d")
    src = f"{_rel(export_pkl, base)} and " if export_pkl else ""
    values: dict[str, object] = {
        "model.name": model,
        "model.version": "0.1.0",
        "data.eval_csv": _rel(s.eval_csv, base),  # type: ignore[arg-type]
        "data.text_column": s.text_column,
        "data.label_column": s.label_column,
        **{f"publish.{t}.repo": placeholder_repo(model) for t in ("github", "huggingface")},
    }
    how = (
        "carved by release init: stratified by label, no text shared with train_csv"
        if s.carved
        else "held out: never used for training"
    )
    notes = {
        "model.version": "bump for every release: published versions are immutable",
        "data.eval_csv": f"{n_eval} rows, {how}",
        **{
            f"publish.{t}.repo": f"placeholder: `release publish --target {t}` refuses it until set"
            for t in ("github", "huggingface")
        },
    }
    if s.train_csv is not None:
        values["data.train_csv"] = _rel(s.train_csv, base)
        what = (
            "rows the learner was trained on (baseline, leak check)"
            if export_pkl
            else "training rows"
        )
        notes["data.train_csv"] = f"{n_train} {what}"
        if s.dropped:
            notes["data.train_csv"] += (
                f"; written by release init --drop-overlap: "
                f"{_rel(s.source_csv or s.train_csv, base)} less {len(s.dropped)} row(s) whose "
                f"text is also in the eval CSV, e.g. {s.dropped[0]!r}"
            )
    comments = {
        "": [
            f"Starter release config written by `release init` on {when} for {src}your CSV data:",
            f"{n_train} train rows, {n_eval} eval rows, {len(classes)} classes{vocab_note}.",
            "Every key is listed: a commented-out line shows its default (or, for a key unset by",
            "default, an example). Paths are relative to this file. Build with:",
            f"  release --config {s.config_path.name} build",
            "Editor completion and checks (Taplo, Even Better TOML): run",
            "`release schema > release.schema.json` and make `#:schema ./release.schema.json`",
            "the first line of this file.",
        ],
        "data.label_column": [
            "rows per class (train / eval):",
            *(f"  {c}: {s.train_counts.get(c, 0)} / {s.eval_counts.get(c, 0)}" for c in classes),
            *(f"note: {n}" for n in s.notes),
        ],
        "validate": [
            "The gates that fit your data (on by default): the model must beat always answering",
            f"the majority class ({100 * majority:.1f}% of this eval set) and may trail a TF-IDF +",
            "logistic-regression baseline trained on the same rows by max_baseline_deficit points.",
        ],
    }
    if export_pkl is not None:
        values["train.export_pkl"] = _rel(export_pkl, base)
        comments["train.export_pkl"] = [f"its classes: {', '.join(s.learner_classes or [])}"]
    if s.onnx_note:
        comments["onnx.enabled"] = [f"this learner: {s.onnx_note}"]
    if s.plan is not None:
        budget_recipe(s, values, notes, comments)
    return "\n".join(starter_toml(values, notes, comments)) + "\n"


def summary_lines(s: Starter) -> list[str]:
    """What init found, for the log."""
    out = [
        f"text column {s.text_column!r}, label column {s.label_column!r}",
        f"{sum(s.train_counts.values())} train rows, {sum(s.eval_counts.values())} eval rows, "
        f"{len(set(s.train_counts) | set(s.eval_counts))} classes",
    ]
    if s.carved:
        out.append(f"carved {s.eval_csv} (stratified, no text shared with {s.train_csv})")
    if s.dropped:
        out.append(
            f"dropped {len(s.dropped)} training row(s) whose text is also in {s.eval_csv} (case, "
            f"spacing and punctuation aside); wrote {s.train_csv} without them:"
        )
        out += [f"  dropped: {t!r}" for t in s.dropped[:DROPPED_LISTED]]
        if len(s.dropped) > DROPPED_LISTED:
            out.append(f"  ... and {len(s.dropped) - DROPPED_LISTED} more")
    if s.onnx_note:
        out.append(f"onnx variant: {s.onnx_note}")
    if s.plan is not None:
        from pipeline.time_budget import format_duration

        p = s.plan
        out.append(
            f"time budget {s.budget}: network {p.network.shape}, {p.epochs} epochs of "
            f"{p.batch_size} rows a step, lr {p.network.lr:g}; estimate "
            f"{format_duration(p.estimate_seconds)} of training on this machine now"
        )
        out += [f"note: {x}" for x in p.notes]
    out += s.notes
    return out
