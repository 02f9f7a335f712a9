"""benchmarks/data/dev_typos.csv is what `python -m benchmarks.typos` writes from the dev set."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.typos import misspell, misspell_any, recase

ROOT = Path(__file__).resolve().parents[2]


def _one_edit_apart(a: str, b: str) -> bool:
    """True if b is a with one letter dropped, doubled, replaced or two neighbours swapped."""
    if len(a) == len(b):
        diff = [i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y]
        return len(diff) == 1 or (
            len(diff) == 2 and diff[1] == diff[0] + 1 and a[diff[0]] == b[diff[1]]
        )
    short, long_ = sorted((a, b), key=len)
    return len(long_) == len(short) + 1 and any(
        long_[:i] + long_[i + 1 :] == short for i in range(len(long_))
    )


def test_misspell_makes_one_edit_and_keeps_the_first_letter() -> None:
    rng = random.Random(3)
    for word in ("relationship", "dialog", "error", "invoice") * 25:
        typo = misspell(word, rng)
        assert typo != word and typo[0] == word[0] and _one_edit_apart(word, typo), (word, typo)


@pytest.mark.parametrize(
    ("name", "kind"),
    [("dev_typos.csv", "slip"), ("dev_typos_any.csv", "any"), ("dev_case.csv", "case")],
)
def test_checked_in_dev_typos_is_reproducible(tmp_path: Path, name: str, kind: str) -> None:
    out = tmp_path / name
    src = ROOT / "benchmarks" / "data" / "dev.csv"
    subprocess.run(
        [sys.executable, "-m", "benchmarks.typos", str(src), str(out), "--kind", kind],
        cwd=ROOT,
        check=True,
    )
    assert out.read_bytes() == (ROOT / "benchmarks" / "data" / name).read_bytes()
    rows = out.read_text(encoding="utf-8").splitlines()
    clean = src.read_text(encoding="utf-8").splitlines()
    assert rows[0] == clean[0] and len(rows) == len(clean)
    changed = sum(a != b for a, b in zip(clean[1:], rows[1:], strict=True))
    assert changed >= 0.95 * (len(clean) - 1)  # every text with a word of 4+ letters


def test_a_csv_without_texts_is_a_message_not_a_traceback(tmp_path: Path) -> None:
    for name, body in (
        ("empty.csv", ""),
        ("header.csv", "text,label\n"),
        ("other.csv", "q,l\na,b\n"),
    ):
        src = tmp_path / name
        src.write_text(body, encoding="utf-8")
        proc = subprocess.run(
            [sys.executable, "-m", "benchmarks.typos", str(src), str(tmp_path / "out.csv")],
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        assert proc.returncode == 1, proc
        assert "no rows with a `text` column" in proc.stderr and "Traceback" not in proc.stderr
        assert not (tmp_path / "out.csv").exists()


def test_misspell_any_makes_one_edit_anywhere() -> None:
    rng = random.Random(4)
    firsts = 0
    for word in ("relationship", "dialog", "error", "invoice") * 50:
        typo = misspell_any(word, rng)
        assert typo != word and _one_edit_apart(word, typo), (word, typo)
        firsts += typo[0] != word[0]
    assert firsts > 0  # unlike `misspell`, the first letter can change


def test_recase_changes_only_case_by_turns() -> None:
    rng = random.Random(0)
    text = "how do I post a sales order's lines?"
    out = [recase(text, i, rng) for i in range(3)]
    assert out[0] == "How Do I Post A Sales Order'S Lines?" and out[1] == text.upper()
    assert all(o.lower() == text.lower() for o in out)
    assert {w for w in out[2].split()} - {
        w for w in (*out[0].split(), *out[1].split(), *text.lower().split())
    } == set()
