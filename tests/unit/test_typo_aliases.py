"""Typo aliases: which misspellings map to which word (pipeline/typo_aliases.py)."""

from __future__ import annotations

import random
from collections import Counter

from benchmarks.typos import misspell
from pipeline.typo_aliases import neighbour_keys, one_slip_spellings, typo_aliases

VOCAB = ["xxunk", "xxpad", "xxbos", "xxmaj", "the", "color", "colour", "dialog", "order", "form",
         "from", "ordre", "rare", "XML", "café", "xxfake"]  # fmt: skip


def test_one_slip_spellings_are_the_four_slips_at_every_position() -> None:
    s = one_slip_spellings("form")
    assert {"orm", "fom", "ffoem"} & s == {"orm", "fom"}  # drops; two slips are not one
    assert {"fform", "foorm", "from", "fomr", "dorm", "firm", "fprm"} <= s
    assert "form" not in s and "xorm" not in s  # x is not beside f
    assert neighbour_keys("f") == "dgrv" and neighbour_keys("1") == ""


def test_the_benchmark_typos_are_all_one_slip() -> None:
    # benchmarks/typos.py writes dev_typos.csv with the same keyboard: each of its edits is one
    # of these spellings (the selection set measures this kind of typo)
    rng = random.Random(5)
    for word in ("relationship", "dialog", "invoice", "purchase") * 50:
        assert misspell(word, rng) in one_slip_spellings(word)


def test_aliases_cover_common_words_only_and_skip_clashes() -> None:
    counts = Counter({i: 5 for i in range(len(VOCAB))})
    counts[VOCAB.index("rare")] = 2
    al = typo_aliases(VOCAB, counts, min_count=3)
    ids = {w: i for i, w in enumerate(VOCAB)}
    assert al["colr"] == ids["color"] and al["dialgo"] == ids["dialog"]
    assert al["odrer"] == ids["order"] and al["coloru"] == ids["colour"]
    # a vocabulary word is never an alias (`ordre` is a slip of `order` but a word of its own)
    assert "ordre" not in al and "order" not in al
    # a spelling that is a slip of two words (`fom`: form and from) maps to neither
    clash = one_slip_spellings("form") & one_slip_spellings("from")
    assert "fom" in clash and not clash & set(al)
    assert al["fomr"] == ids["form"] and al["frmo"] == ids["from"]
    # words seen fewer than min_count times, shorter than 4 letters, not lowercase ASCII
    # letters, or fastai's special tokens get none
    for word in ("rare", "the", "XML", "café", "xxfake", "xxmaj"):
        assert not any(i == ids[word] for i in al.values()), word


def test_aliases_are_deterministic() -> None:
    counts = Counter({i: 3 for i in range(len(VOCAB))})
    a, b = typo_aliases(VOCAB, counts), typo_aliases(list(VOCAB), Counter(counts))
    assert a == b and list(a) == sorted(a)
