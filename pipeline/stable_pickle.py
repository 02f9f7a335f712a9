"""A pickle module for `torch.save` whose bytes do not depend on PYTHONHASHSEED.

Python iterates a set of strings in an order that follows the per-process string hash, so the
same learner pickled by two interpreters differs wherever it holds one (spaCy's stop-word set
inside fastai's tokenizer, for one). This Pickler writes the members of every set and frozenset
in sorted order when they can be sorted; the result unpickles with the standard `pickle` (and so
with `fastai.learner.load_learner`) into equal sets. Everything else is pickle's own code.

Use: `torch.save(obj, path, pickle_module=pipeline.stable_pickle, pickle_protocol=2)`, for a
fastai text learner inside `with spacy_stop_words_in_order(learn):`.
"""

from __future__ import annotations

import functools
import pickle
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

# torch.save reads these names from its pickle_module
Unpickler = pickle.Unpickler
load = pickle.load
loads = pickle.loads
__version__ = "1"


def _ordered(items: set[Any] | frozenset[Any]) -> list[Any]:
    try:
        return sorted(items, key=lambda x: (type(x).__name__, x))
    except TypeError:  # members that do not compare: keep Python's order
        return list(items)


class Pickler(pickle._Pickler):  # the pure-Python Pickler: its C twin cannot be overridden for sets
    dispatch = pickle._Pickler.dispatch.copy()

    def save_set(self, obj: set[Any]) -> None:
        items = _ordered(obj)
        if self.proto < 4:
            self.save_reduce(set, (items,), obj=obj)
            return
        self.write(pickle.EMPTY_SET)
        self.memoize(obj)
        for start in range(0, len(items), 1000):
            self.write(pickle.MARK)
            for item in items[start : start + 1000]:
                self.save(item)
            self.write(pickle.ADDITEMS)

    def save_frozenset(self, obj: frozenset[Any]) -> None:
        items = _ordered(obj)
        if self.proto < 4:
            self.save_reduce(frozenset, (items,), obj=obj)
            return
        self.write(pickle.MARK)
        for item in items:
            self.save(item)
        if id(obj) in self.memo:  # a member referred back to this frozenset
            self.write(pickle.POP_MARK + self.get(self.memo[id(obj)][0]))
            return
        self.write(pickle.FROZENSET)
        self.memoize(obj)

    dispatch[set] = save_set
    dispatch[frozenset] = save_frozenset


def dumps(obj: Any, protocol: int | None = None) -> bytes:
    import io

    buf = io.BytesIO()
    Pickler(buf, protocol).dump(obj)
    return buf.getvalue()


def dump(obj: Any, file: Any, protocol: int | None = None) -> None:
    Pickler(file, protocol).dump(obj)


@contextmanager
def spacy_stop_words_in_order(learn: Any) -> Iterator[None]:
    """While exporting: spaCy's stop-word set, the one set spaCy pickles with its own pickler.

    spaCy pickles a Vocab's lexical-attribute functions with srsly (cloudpickle) into bytes of
    their own, out of reach of our Pickler; among them `is_stop`, bound to the set of stop words.
    For the export it is bound to a dict of the same words in sorted order instead (`in` answers
    the same); the set is put back afterwards.
    """
    from fastai.text.core import SpacyTokenizer, Tokenizer
    from spacy.attrs import IS_STOP

    try:
        tfms = list(learn.dls.valid_ds.tls[0].tfms.fs)
    except (AttributeError, IndexError, TypeError):  # not a fastai text learner: nothing to do
        tfms = []
    swapped = []
    for t in tfms:
        spacy_tok = getattr(t, "tok", None) if isinstance(t, Tokenizer) else None
        if not isinstance(spacy_tok, SpacyTokenizer):
            continue
        getters = spacy_tok.pipe.__self__.vocab.lex_attr_getters
        fn = getters.get(IS_STOP)
        stops = fn.keywords.get("stops") if isinstance(fn, functools.partial) else None
        if isinstance(stops, set | frozenset):
            getters[IS_STOP] = functools.partial(
                fn.func, *fn.args, stops=dict.fromkeys(sorted(stops))
            )
            swapped.append((getters, fn))
    try:
        yield
    finally:
        for getters, fn in swapped:
            getters[IS_STOP] = fn
