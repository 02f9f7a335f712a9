"""Typo aliases: one-edit misspellings of a word-level learner's common words, mapped to them.

A word-level AWD_LSTM reads every word it has not seen as `xxunk`: one typo in the word that
carries a question's intent ("colir the row", "relaionship between...") erases the cue, and the
model answers from what is left. `typo_aliases` lists, for each word of 4+ letters seen at least
`min_count` times in the training texts, the spellings one slip away on a QWERTY keyboard (a
letter dropped, doubled, swapped with its neighbour, or replaced by a neighbouring key) and maps
each to that word's id, leaving out spellings that are words of their own or slips of two
different words. `add_to_learner` puts them into fastai's `Numericalize.o2i` lookup: plain data
in the pickle, so `load_learner` and the Hub's `from_pretrained_fastai` use them with no code
from this project, and the onnx variant's tokenizer.json carries the same map.

No torch or fastai import at module level: `benchmarks/typos.py` uses the keyboard here.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from pipeline.client.learner_spec import lookup_entries

KEYBOARD_ROWS = ("qwertyuiop", "asdfghjkl", "zxcvbnm")
MIN_LETTERS = 4
DEFAULT_MIN_COUNT = 3  # fastai's own default min_freq: words it would keep in a vocabulary


def neighbour_keys(ch: str) -> str:
    """The keys beside `ch` on its QWERTY row and above/below it ("" for a non-letter)."""
    for row_i, row in enumerate(KEYBOARD_ROWS):
        col = row.find(ch)
        if col < 0:
            continue
        near = row[max(col - 1, 0) : col] + row[col + 1 : col + 2]
        for other in (row_i - 1, row_i + 1):
            if 0 <= other < len(KEYBOARD_ROWS):
                near += KEYBOARD_ROWS[other][col : col + 1]
        return near
    return ""


def one_slip_spellings(word: str) -> set[str]:
    """Every spelling of `word` one keyboard slip away: a letter dropped, doubled, swapped with
    the next one, or replaced by a neighbouring key (at any position, the first included)."""
    out: set[str] = set()
    for i, ch in enumerate(word):
        out.add(word[:i] + word[i + 1 :])
        out.add(word[:i] + ch + word[i:])
        for k in neighbour_keys(ch):
            out.add(word[:i] + k + word[i + 1 :])
        if i + 1 < len(word) and word[i + 1] != ch:
            out.add(word[:i] + word[i + 1] + ch + word[i + 2 :])
    out.discard(word)
    return out


def typo_aliases(
    vocab: Sequence[str], counts: Counter[int], min_count: int = DEFAULT_MIN_COUNT
) -> dict[str, int]:
    """{misspelling: id} for the vocabulary's words of 4+ lowercase letters whose id occurs at
    least `min_count` times in `counts` (token ids of the training texts). A spelling that is a
    vocabulary entry itself, or a slip of two different words, is left out."""
    known = set(vocab)
    owners: defaultdict[str, set[int]] = defaultdict(set)
    for i, word in enumerate(vocab):
        if counts[i] < min_count or len(word) < MIN_LETTERS or not _plain_word(word):
            continue
        for spelling in one_slip_spellings(word):
            if spelling not in known:
                owners[spelling].add(i)
    return {s: next(iter(ids)) for s, ids in sorted(owners.items()) if len(ids) == 1}


def _plain_word(word: str) -> bool:
    # fastai lowercases and marks capitals with xxmaj/xxup, so vocabulary words are lowercase;
    # its special tokens (xxbos, xxunk...) are not words anyone misspells
    return word.isascii() and word.isalpha() and word.islower() and not word.startswith("xx")


def numericalize_of(learn: Any) -> Any:
    """The fastai Numericalize transform of a text learner's input pipeline (None if none)."""
    from fastai.text.data import Numericalize

    for t in learn.dls.valid_ds.tls[0].tfms.fs:
        if isinstance(t, Numericalize):
            return t
    return None


def count_in_learner(learn: Any) -> int:
    """How many typo aliases (lookup entries outside the vocabulary with a real id) `learn` has."""
    num = numericalize_of(learn)
    if num is None or not getattr(num, "o2i", None):
        return 0
    known = {str(w) for w in num.vocab}
    return sum(1 for k in lookup_entries(num) if k not in known)


def add_to_learner(learn: Any, token_ids: Iterable[Iterable[int]], min_count: int) -> int:
    """Add typo aliases to `learn`'s vocabulary lookup; returns how many. `token_ids` are the
    training texts as ids (the counts that decide which words are common enough)."""
    num = numericalize_of(learn)
    if num is None:
        raise ValueError("the learner's input pipeline has no fastai Numericalize")
    counts: Counter[int] = Counter()
    for ids in token_ids:
        counts.update(int(i) for i in ids)
    aliases = typo_aliases([str(w) for w in num.vocab], counts, min_count)
    # lookups are dropped so they cannot shadow an alias; vocabulary entries always win over
    # aliases (aliases exclude them anyway)
    num.o2i = type(num.o2i)(num.o2i.default_factory, {**aliases, **lookup_entries(num)})
    return len(aliases)
