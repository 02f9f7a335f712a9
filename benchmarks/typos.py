"""Write a copy of a labelled CSV with one typo per text: a selection set for unseen-word handling.

    python -m benchmarks.typos benchmarks/data/dev.csv benchmarks/data/dev_typos.csv [--seed 0]

The dev set has few words the training data lacks (11 of its 1,177), so it cannot tell whether a
setting helps with typos and new words, which outside users bring. This copy changes one word of
four or more letters per text, chosen and edited with a seeded RNG (drop a letter, swap two
neighbours, double one, or hit a neighbouring key), so the same command writes the same file.
"""

from __future__ import annotations

import argparse
import csv
import random
import re
from pathlib import Path

KEYS = ["qwertyuiop", "asdfghjkl", "zxcvbnm"]


def _neighbours(ch: str) -> str:
    for row_i, row in enumerate(KEYS):
        col = row.find(ch)
        if col < 0:
            continue
        near = row[max(col - 1, 0) : col] + row[col + 1 : col + 2]
        for other in (row_i - 1, row_i + 1):
            if 0 <= other < len(KEYS):
                near += KEYS[other][col : col + 1]
        return near
    return ""


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


def with_typo(text: str, rng: random.Random) -> str:
    words = list(re.finditer(r"[A-Za-z]{4,}", text))
    if not words:
        return text
    m = rng.choice(words)
    return text[: m.start()] + misspell(m.group(), rng) + text[m.end() :]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("src", type=Path)
    ap.add_argument("dst", type=Path)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    with args.src.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    if not rows or "text" not in (reader.fieldnames or []):
        raise SystemExit(f"{args.src}: no rows with a `text` column to misspell")
    with args.dst.open("w", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(reader.fieldnames or []), lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({**r, "text": with_typo(r["text"], rng)})


if __name__ == "__main__":
    main()
