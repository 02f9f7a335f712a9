"""Count the words of labelled CSVs that a training CSV lacks, as fastai's tokenizer splits them.

    python -m benchmarks.unseen pipeline/data/train.csv benchmarks/data/dev.csv benchmarks/data/dev_typos.csv

fastai's special tokens (`xxbos`, `xxmaj`, ...) are not counted. A word-level model reads every
unseen word as `xxunk`, so this says how much a set can tell about unseen-word handling.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.dataset import read_labelled_csv


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("train", type=Path)
    ap.add_argument("sets", type=Path, nargs="+")
    args = ap.parse_args()
    from fastai.text.core import Tokenizer, WordTokenizer

    tok = Tokenizer(WordTokenizer())
    known = {w for text in read_labelled_csv(args.train, "text", "label").texts for w in tok(text)}
    for path in args.sets:
        texts = read_labelled_csv(path, "text", "label", min_classes=1).texts
        words = [[w for w in tok(t) if not w.startswith("xx")] for t in texts]
        unseen = [[w for w in ws if w not in known] for ws in words]
        print(
            f"{path}: {sum(map(len, unseen))} of {sum(map(len, words))} words unseen, "
            f"in {sum(map(bool, unseen))} of {len(texts)} texts"
        )


if __name__ == "__main__":
    main()
