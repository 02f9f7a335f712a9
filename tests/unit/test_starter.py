"""`release init` on a user's own CSV: columns, counts, a stratified eval CSV with no shared
text, placeholders that publish refuses, and a config that loads."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline import config as cfg
from pipeline.errors import ConfigError, InputError
from pipeline.publish import publishers_for
from pipeline.starter import detect_columns, init_config, read_table

LABELS = {"billing": 30, "shipping": 20, "returns": 6, "rare": 1}


def write_csv(path: Path, extra_duplicates: bool = True) -> Path:
    rows = [
        {
            "id": str(i),
            "question": f"question {i} about my {label} case number {i * 7}",
            "topic": label,
        }
        for label, n in LABELS.items()
        for i in range(n)
    ]
    if extra_duplicates:  # the same text twice (another case): must land on one side only
        rows.append({**rows[0], "id": "dup", "question": rows[0]["question"].upper()})
    rows.append({"id": "empty", "question": "", "topic": "billing"})
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["id", "question", "topic"])
        w.writeheader()
        w.writerows(rows)
    return path


def test_detects_columns_by_name_and_by_shape(tmp_path: Path) -> None:
    t = read_table(write_csv(tmp_path / "d.csv"))
    assert detect_columns(t) == ("question", "topic")
    path = tmp_path / "anon.csv"
    path.write_text(
        "a,b,c\n" + "".join(f"{i},some longer text {i},{'xy'[i % 2]}\n" for i in range(20))
    )
    assert detect_columns(read_table(path)) == ("b", "c")
    with pytest.raises(InputError, match="--text-column 'nope': no such column"):
        detect_columns(read_table(path), text_column="nope")


def test_init_carves_a_stratified_eval_csv_without_shared_text(tmp_path: Path) -> None:
    data = write_csv(tmp_path / "tickets.csv")
    s = init_config(tmp_path / "my.toml", csv_path=data)
    assert (s.text_column, s.label_column) == ("question", "topic")
    train, eval_ = read_table(s.train_csv), read_table(s.eval_csv)
    seen = {r["question"].casefold() for r in train.rows}
    assert not any(r["question"].casefold() in seen for r in eval_.rows)
    # 20% of each class (at least one), the single-row class in train only, empty rows dropped
    assert dict(s.eval_counts) == {"billing": 6, "shipping": 4, "returns": 1}
    assert sum(s.train_counts.values()) + sum(s.eval_counts.values()) == sum(LABELS.values()) + 1
    assert any("'rare'" in n for n in s.notes) and any("1 rows with an empty" in n for n in s.notes)
    c = cfg.load(tmp_path / "my.toml")
    assert c.model.name == "tickets" and c.data.eval_csv == s.eval_csv.resolve()
    assert c.validate.min_accuracy is None and c.onnx.enabled == "auto"
    text = (tmp_path / "my.toml").read_text()
    assert "#   billing: 25 / 6" in text  # 31 rows: 30 texts, one of them twice
    for t in ("github", "huggingface"):
        with pytest.raises(
            ConfigError, match=f"publish.{t}.repo: 'CHANGE-ME/tickets' is the placeholder"
        ):
            publishers_for(c, (t,))
    with pytest.raises(ConfigError, match="already exists; pass --force"):
        init_config(tmp_path / "my.toml", csv_path=data)


def test_init_refuses_to_carve_for_a_trained_learner(tmp_path: Path) -> None:
    pkl = tmp_path / "export.pkl"
    pkl.write_bytes(b"x")
    with pytest.raises(InputError, match="cannot tell which rows the learner saw: pass --eval-csv"):
        init_config(tmp_path / "r.toml", csv_path=write_csv(tmp_path / "d.csv"), export_pkl=pkl)


def test_init_cli_names_the_file_and_exits_3_on_a_bad_column(tmp_path: Path) -> None:
    data = write_csv(tmp_path / "d.csv")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    run = [
        sys.executable,
        "-m",
        "pipeline",
        "--config",
        str(tmp_path / "x.toml"),
        "init",
        "--csv",
        str(data),
    ]
    ok = subprocess.run(run, capture_output=True, text=True, env=env)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == str(tmp_path / "x.toml")
    bad = subprocess.run(
        [*run, "--force", "--label-column", "nope"], capture_output=True, text=True, env=env
    )
    assert bad.returncode == 3 and "--label-column 'nope': no such column" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_files_written_honour_the_umask(tmp_path: Path) -> None:
    from pipeline import atomic

    old = os.umask(0o022)
    try:
        atomic.write_text(tmp_path / "a", "x")
        os.umask(0o027)
        atomic.write_bytes(tmp_path / "b", b"x")
    finally:
        os.umask(old)
    assert (tmp_path / "a").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "b").stat().st_mode & 0o777 == 0o640


def _labelled(path: Path, rows: list[tuple[str, str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["text", "intent"])
        w.writerows(rows)
    return path


def test_drop_overlap_writes_a_train_copy_without_the_shared_texts(tmp_path: Path) -> None:
    """A public dataset's official split shares texts with its train split: the build refuses
    them, init --drop-overlap leaves them out of a copy of the train CSV, counted and listed."""
    from pipeline.dataset import check_eval_against_train, read_labelled_csv
    from pipeline.starter import summary_lines

    train_rows = [(f"how do i pay invoice {i}", "billing") for i in range(8)]
    train_rows += [(f"where is parcel {i}", "shipping") for i in range(8)]
    train_rows += [("Where is my ORDER?", "shipping"), ("refund my card", "billing")]
    eval_rows = [("where is my order", "shipping"), ("refund my card!", "billing")]
    eval_rows += [("pay my bill", "billing"), ("track the truck", "shipping")]
    train = _labelled(tmp_path / "train.csv", train_rows)
    test = _labelled(tmp_path / "test.csv", eval_rows)
    read = lambda p: read_labelled_csv(p, "text", "intent", min_classes=1)  # noqa: E731
    # the build's check as it is, and its message names the way out
    with pytest.raises(InputError) as e:
        check_eval_against_train(read(train), read(test))
    assert "2 text(s) also in" in str(e.value)
    assert f"`release init --csv {train} --eval-csv {test} --drop-overlap`" in str(e.value)
    # without the option: a note, the data as it is
    s = init_config(tmp_path / "keep.toml", csv_path=train, eval_csv=test)
    assert s.train_csv == train and not s.dropped
    assert any("2 training row(s) share their text with" in n for n in s.notes)
    # with it: a copy without the two rows, and a config that builds past the check
    s = init_config(tmp_path / "r.toml", csv_path=train, eval_csv=test, drop_overlap=True)
    assert s.train_csv == tmp_path / "train-no-overlap.csv"
    assert s.dropped == ["Where is my ORDER?", "refund my card"]
    kept = read(s.train_csv)
    assert len(kept) == len(train_rows) - 2 and "refund my card" not in kept.texts
    check_eval_against_train(kept, read(test))  # passes now
    c = cfg.load(tmp_path / "r.toml")
    assert c.data.train_csv == s.train_csv.resolve()
    text = (tmp_path / "r.toml").read_text()
    assert "written by release init --drop-overlap: train.csv less 2 row(s) whose text" in text
    lines = summary_lines(s)
    assert any("dropped 2 training row(s)" in x for x in lines)
    assert "  dropped: 'refund my card'" in lines
    assert sum(s.train_counts.values()) == 16
    with pytest.raises(ConfigError, match="train-no-overlap.csv: already exists"):
        init_config(tmp_path / "r2.toml", csv_path=train, eval_csv=test, drop_overlap=True)


def test_init_refuses_a_row_with_more_fields_than_the_header(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text("text,label\nmy invoice,billing\nmy parcel,shipping, urgent\n")
    with pytest.raises(InputError, match="line 3: 3 fields, the header has 2"):
        init_config(tmp_path / "r.toml", csv_path=path)


def test_carving_keeps_texts_equal_but_for_punctuation_on_one_side(tmp_path: Path) -> None:
    from pipeline.dataset import same_text_key

    rows = [(f"question {i} about billing", "billing") for i in range(10)]
    rows += [(f"question {i} about shipping", "shipping") for i in range(10)]
    rows += [(f"Question {i} about billing?", "billing") for i in range(10)]
    s = init_config(tmp_path / "r.toml", csv_path=_labelled(tmp_path / "all.csv", rows))
    train, eval_ = read_table(s.train_csv), read_table(s.eval_csv)
    seen = {same_text_key(r["text"]) for r in train.rows}
    assert not any(same_text_key(r["text"]) in seen for r in eval_.rows)
