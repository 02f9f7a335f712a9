from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from pipeline.config import resolve_path
from pipeline.dataset import (
    LabelledTexts,
    NearCopyIndex,
    check_challenge,
    check_eval_against_train,
    near_copies,
    read_labelled_csv,
    same_text_key,
    word_set,
)
from pipeline.errors import InputError

INTENTS = {
    "business_logic",
    "entity_definition",
    "ui_components",
    "api_integration",
    "data_access",
    "troubleshooting",
    "general",
}


def csv(tmp_path: Path, body: str | bytes, name: str = "d.csv") -> Path:
    p = tmp_path / name
    p.write_bytes(body if isinstance(body, bytes) else body.encode())
    return p


def read(p: Path):
    return read_labelled_csv(p, "text", "label")


def test_bundled_demo_dataset_meets_its_contract() -> None:
    train = read(resolve_path("bundled:train.csv", Path(".")))
    eval_ = read(resolve_path("bundled:eval.csv", Path(".")))
    assert len(train) >= 1400 and len(eval_) >= 210
    assert set(train.classes) == set(eval_.classes) == INTENTS
    assert min(Counter(eval_.labels).values()) >= 30
    check_eval_against_train(train, eval_)  # no shared text, no unknown label
    assert len(set(train.texts)) == len(train.texts)


def bundled_held_out_sets() -> dict[str, LabelledTexts]:
    """The eval and challenge sets shipped in the package, and the dev sets outside it."""
    root = Path(__file__).resolve().parents[2]
    sets = {n: read(resolve_path(f"bundled:{n}.csv", Path("."))) for n in ("eval", "challenge")}
    for name in ("dev", "dev2", "dev3", "dev4"):
        sets[name] = read(root / "benchmarks" / "data" / f"{name}.csv")
    return sets


MIN_ROWS = {"eval": 210, "challenge": 210, "dev": 140}


def test_bundled_challenge_set_is_unseen_text_of_every_intent() -> None:
    """pipeline/data/challenge.csv: 30+ queries per intent, no text shared with train or eval.

    The dev sets the demo's settings are chosen on (benchmarks/data/dev*.csv) are disjoint from
    train, from the challenge set and from each other, so choosing on them leaks nothing into
    the challenge numbers.
    """
    train = read(resolve_path("bundled:train.csv", Path(".")))
    sets = bundled_held_out_sets()
    challenge = sets["challenge"]
    assert min(Counter(challenge.labels).values()) >= 30
    assert len({same_text_key(t) for t in challenge.texts}) == len(challenge)
    for name, rows in sets.items():
        assert len(rows) >= MIN_ROWS.get(name, 200) and set(rows.classes) == INTENTS, name
        check_eval_against_train(train, rows)  # known labels, no text shared with train
    names = list(sets)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            check_challenge(sets[a], None, sets[b])


# dev.csv was written before this check existed and four of its rows are this close to rows of
# the original training data; the settings were chosen on dev as it is, so it stays as it is.
DEV_NEAR_TRAIN = {
    "which table holds the GL transactions",
    "What is the recommended team size for an implementation?",
    "What skills does a technical consultant need?",
    "Is there a user group conference every year?",
}


def test_bundled_held_out_sets_hold_no_near_copy_of_a_training_or_other_held_out_row() -> None:
    """Exact text is not the only leak: 'licensing model for named users vs concurrent' scored on
    the challenge set was a training row less one word. Every held-out row is below 0.7
    word-set Jaccard of every training row and of every row of the other held-out sets."""
    train = read(resolve_path("bundled:train.csv", Path(".")))
    held_out = bundled_held_out_sets()
    near_train = {
        name: sorted(text for text, _ in near_copies(rows.texts, train.texts))
        for name, rows in held_out.items()
    }
    assert near_train == {
        "eval": [],
        "challenge": [],
        "dev": sorted(DEV_NEAR_TRAIN),
        "dev2": [],
        "dev3": [],
        "dev4": [],
    }
    names = list(held_out)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert near_copies(held_out[a].texts, held_out[b].texts) == [], (a, b)


def test_near_copies_finds_a_row_less_one_word_and_not_a_mere_topic_match() -> None:
    train = ("licensing model for named users vs concurrent users", "which table holds invoices")
    assert near_copies(("licensing model for named users vs concurrent",), train) == [
        ("licensing model for named users vs concurrent", train[0])
    ]
    assert near_copies(("which table holds the sales order lines",), train) == []


def test_challenge_set_sharing_text_or_with_unknown_labels_is_refused(tmp_path: Path) -> None:
    def one(body: str, name: str):
        return read_labelled_csv(csv(tmp_path, body, name), "text", "label", min_classes=1)

    train = read(csv(tmp_path, "text,label\nhello there,a\nbye now,b\n", "t.csv"))
    eval_ = one("text,label\ngood morning,a\n", "e.csv")
    check_challenge(one("text,label\nhey you,b\n", "c.csv"), train, eval_)
    for body, message in (
        ("text,label\nHELLO THERE,a\n", r"1 text\(s\) also in .*t\.csv, e\.g\. 'HELLO THERE'"),
        ("text,label\nGood Morning,b\n", r"1 text\(s\) also in .*e\.csv"),
        ('text,label\n"Hello,  there?",a\n', r"1 text\(s\) also in .*t\.csv"),
        ("text,label\nnew words,zzz\n", "label 'zzz' never occur in"),
    ):
        with pytest.raises(InputError, match=message):
            check_challenge(one(body, "c.csv"), train, eval_)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("", "the file is empty"),
        ("text,label\n", "a header but no rows"),
        (
            "query,intent\nhi,a\n",
            "missing columns 'text', 'label'; found columns 'query', 'intent'",
        ),
        ("text,label\nhi,a\nho,a\n", "only 1 label (a) in 2 rows"),
        ("text,label\nhi,a\n,b\n", "line 3: empty 'text'"),
        ("text,label\nhi,a\nho,\n", "line 3: empty 'label'"),
    ],
)
def test_bad_csv_is_one_clear_error(tmp_path: Path, body: str, message: str) -> None:
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read(csv(tmp_path, body))


def test_a_row_with_more_fields_than_the_header_names_its_line(tmp_path: Path) -> None:
    """An unquoted comma in a label: csv's DictReader would keep the row as "billing"."""
    body = 'text,label\nhi,a\n"where, exactly",b\nmy invoice,billing, urgent\n'
    with pytest.raises(InputError) as e:
        read(csv(tmp_path, body))
    message = str(e.value)
    assert "line 4: 3 fields, the header has 2 (extra: ' urgent')" in message
    assert 'needs the field in double quotes ("billing, urgent")' in message
    # quoted, the same comma is a label of its own
    fixed = read(csv(tmp_path, body.replace("billing, urgent", '"billing, urgent"'), "ok.csv"))
    assert fixed.labels[-1] == "billing, urgent"


def test_missing_csv(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        read(tmp_path / "none.csv")


def test_non_utf8_names_the_line(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"line 3: not UTF-8 \(byte 0xe9"):
        read(csv(tmp_path, b"text,label\nhi,a\ncaf\xe9,b\n"))


@pytest.mark.parametrize(
    ("eval_rows", "problem"),
    [
        ("hey,c\n", "label 'c' never occur"),  # a label training never saw
        ("HI,a\n", "1 text\\(s\\) also in"),  # a training text, in other case
    ],
    ids=["label-not-in-train", "text-leaked-from-train"],
)
def test_eval_set_checked_against_train(tmp_path: Path, eval_rows: str, problem: str) -> None:
    train = read(csv(tmp_path, "text,label\nhi,a\nho,b\n", "t.csv"))
    eval_ = read_labelled_csv(
        csv(tmp_path, "text,label\n" + eval_rows, "e.csv"), "text", "label", min_classes=1
    )
    with pytest.raises(InputError, match=problem):
        check_eval_against_train(train, eval_)


def test_near_copies_finds_what_comparing_every_pair_finds() -> None:
    """The prefix filter skips pairs; it must never skip one at or above the threshold."""
    import random

    rng = random.Random(5)
    words = [f"w{i}" for i in range(30)]
    texts = [" ".join(rng.sample(words, rng.randint(1, 9))) for _ in range(300)]
    held, other = texts[:120], texts[120:]
    for threshold in (0.5, 0.6, 0.7, 0.75, 1.0):
        every_pair = [
            (h, o)
            for h in held
            for o in other
            if len(word_set(h) & word_set(o)) >= threshold * len(word_set(h) | word_set(o))
        ]
        assert near_copies(held, other, threshold) == every_pair
        assert every_pair, threshold  # the data has pairs to find at every threshold
    with pytest.raises(ValueError, match="threshold"):
        near_copies(held, other, 0)


def test_the_build_says_when_held_out_texts_are_near_copies_of_training_texts(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from pipeline.stages.inputs import _warn_near_copies

    train = read(csv(tmp_path, "text,label\nwhich table holds the invoices,a\nhi there,b\n"))
    held = read(csv(tmp_path, "text,label\nwhich table holds invoices,a\nbye now,b\n", "h.csv"))
    with caplog.at_level("WARNING", logger="pipeline.build"):
        _warn_near_copies(held, NearCopyIndex(train.texts), "challenge")
    assert "challenge: 1 of 2 texts share 70%+ of their words" in caplog.text
    assert "'which table holds invoices' ~ 'which table holds the invoices'" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="pipeline.build"):
        no_copy = read(csv(tmp_path, "text,label\nbye now,b\nok,a\n", "n.csv"))
        _warn_near_copies(no_copy, NearCopyIndex(train.texts), "x")
    assert caplog.text == ""
