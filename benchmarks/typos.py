"""Write a copy of a labelled CSV with one typo per text: a selection set for unseen-word handling.

    python -m benchmarks.typos benchmarks/data/dev.csv benchmarks/data/dev_typos.csv [--seed 0]
    python -m benchmarks.typos benchmarks/data/dev.csv benchmarks/data/dev_typos_any.csv --kind any
    python -m benchmarks.typos benchmarks/data/dev.csv benchmarks/data/dev_case.csv --kind case

The dev set has few words the training data lacks (11 of its 1,177), so it cannot tell whether a
setting helps with typos and new words, which outside users bring. This copy changes one word of
four or more letters per text, chosen and edited with a seeded RNG (drop a letter, swap two
neighbours, double one, or hit a neighbouring key), so the same command writes the same file.

`--kind any` edits any letter, the first included, with any letter of the alphabet (drop, insert,
replace, swap): 60 of its 140 typos are not one keyboard slip, the kind `train.typo_aliases`
(pipeline/typo_aliases.py) covers, so it checks that the aliases are not just fitted to how
dev_typos was made (dev_typos: all 140 are slips).

`--kind case` changes no letter but the case of the whole text, by turns Title Case, ALL CAPS and
each word in one of the three at random: people type that way, and a model that reads fastai's
case markers (`xxmaj`, `xxup`) sees a run of them it rarely saw in training (`train.case_markers`).
"""

from __future__ import annotations

import argparse
import csv
import random
import re
from collections.abc import Callable
from pathlib import Path

from pipeline.typo_aliases import neighbour_keys as _neighbours


def misspell(word: str, rng: random.Random) -> str:
    """One typo in `word` (which has at least 4 letters), never the first letter."""
    i = rng.randrange(1, len(word) - 1)
    kind = rng.choice(("drop", "swap", "double", "neighbour"))
    if kind == "drop":
        return word[:i] + word[i + 1 :]
    if kind == "swap" and word[i] != word[i + 1]:
        return word[:i] + word[i + 1] + word[i] + word[i + 2 :]
    if kind == "neighbour" and _neighbours(word[i].lower()):
        return word[:i] + rng.choice(_neighbours(word[i].lower())) + word[i + 1 :]
    return word[:i] + word[i] + word[i:]


LETTERS = "abcdefghijklmnopqrstuvwxyz"


def misspell_any(word: str, rng: random.Random) -> str:
    """One edit anywhere in `word` with any letter: drop, insert, replace or swap."""
    i = rng.randrange(len(word))
    kind = rng.choice(("drop", "insert", "replace", "swap"))
    i_swap = min(i, len(word) - 2)
    if kind == "drop" or (kind == "swap" and word[i_swap] == word[i_swap + 1]):
        return word[:i] + word[i + 1 :]
    if kind == "insert":
        return word[:i] + rng.choice(LETTERS) + word[i:]
    if kind == "replace":
        return word[:i] + rng.choice(LETTERS.replace(word[i].lower(), "")) + word[i + 1 :]
    return word[:i_swap] + word[i_swap + 1] + word[i_swap] + word[i_swap + 2 :]


def with_typo(text: str, rng: random.Random, edit: Callable[..., str] = misspell) -> str:
    words = list(re.finditer(r"[A-Za-z]{4,}", text))
    if not words:
        return text
    m = rng.choice(words)
    return text[: m.start()] + edit(m.group(), rng) + text[m.end() :]


def recase(text: str, i: int, rng: random.Random) -> str:
    """`text` in Title Case, ALL CAPS or mixed word by word, by turns over the row index `i`."""
    if i % 3 == 0:
        return text.title()
    if i % 3 == 1:
        return text.upper()
    return re.sub(r"\S+", lambda m: rng.choice((str.title, str.upper, str.lower))(m.group()), text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("src", type=Path)
    ap.add_argument("dst", type=Path)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--kind",
        choices=("slip", "any", "case"),
        default="slip",
        help="slip: one keyboard slip, never the first letter (default); any: any edit, any "
        "letter; case: no typo, the text's case changed",
    )
    args = ap.parse_args()
    rng = random.Random(args.seed)
    edit = misspell_any if args.kind == "any" else misspell
    with args.src.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    if not rows or "text" not in (reader.fieldnames or []):
        raise SystemExit(f"{args.src}: no rows with a `text` column to misspell")
    with args.dst.open("w", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(reader.fieldnames or []), lineterminator="\n")
        w.writeheader()
        for i, r in enumerate(rows):
            text = r["text"]
            new = recase(text, i, rng) if args.kind == "case" else with_typo(text, rng, edit)
            w.writerow({**r, "text": new})


if __name__ == "__main__":
    main()
