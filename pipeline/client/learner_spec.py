"""A loaded fastai learner's tokenization written down as data: the content of `tokenizer.json`.

`tokenizer_spec(learn)` reads the learner's own fastai `Tokenizer` (its rules and the pickled spaCy
tokenizer inside it) and `Numericalize` (its vocabulary and lookup, typo aliases included), never
defaults, and returns what `TextTokenizer` reads (format: tokenizer_format.py). Both sides use it:
the build writes it into a release (`pipeline/onnx_export.py`), and the client builds the fast
pickle path's linear tokenizer from the learner it just loaded (`predict.Predictor.port`). fastai
and spaCy are imported only by the functions that read a learner, never at import.
"""

from __future__ import annotations

import functools
from typing import Any

from pipeline.client.fastai_rules import RULE_OPTIONS, RULES
from pipeline.client.tokenizer_format import FORMAT, FORMAT_VERSION
from pipeline.errors import InputError


def lookup_entries(num: Any) -> dict[str, int]:
    """`num.o2i` without fastai's lookups: o2i is a defaultdict, so every unknown word it was
    asked (the validation split's, a prediction's) became a key mapping to xxunk. What is left
    is the vocabulary and any aliases."""
    o2i = num.o2i
    unk = o2i.default_factory() if getattr(o2i, "default_factory", None) else 0
    known = {str(w) for w in num.vocab}
    return {k: i for k, i in o2i.items() if k in known or i != unk}


def tokenizer_transforms(learn: Any) -> tuple[Any, Any]:
    """fastai's Tokenizer and Numericalize transforms of a text classifier's input pipeline."""
    from fastai.text.core import Tokenizer
    from fastai.text.data import Numericalize

    tok = num = None
    for t in learn.dls.valid_ds.tls[0].tfms.fs:
        if isinstance(t, Tokenizer) and tok is None:
            tok = t
        elif isinstance(t, Numericalize) and num is None:
            num = t
    if tok is None or num is None:
        raise InputError(
            "the learner's input pipeline has no fastai Tokenizer + Numericalize; "
            "the onnx variant supports fastai text classifiers only"
        )
    return tok, num


def _rule_spec(rule: Any) -> Any:
    fn, kwargs = rule, {}
    if isinstance(rule, functools.partial) and not rule.args:
        fn, kwargs = rule.func, dict(rule.keywords)
    name = getattr(fn, "__name__", repr(fn))
    if getattr(fn, "__module__", "") != "fastai.text.core" or name not in RULES:
        raise InputError(
            f"text rule {getattr(fn, '__module__', '?')}.{name} is not one of fastai's rules the "
            f"onnx client reproduces ({', '.join(RULES)})"
        )
    bad = set(kwargs) - RULE_OPTIONS.get(name, frozenset())
    if bad:
        raise InputError(f"text rule {name} with options {sorted(bad)} is not supported")
    return {"name": name, "kwargs": kwargs} if kwargs else name


def _regex(fn: Any) -> dict[str, Any] | None:
    if fn is None:
        return None
    rx = getattr(fn, "__self__", None)
    if rx is None or not hasattr(rx, "pattern"):
        raise InputError(
            f"spaCy tokenizer: {fn!r} is not a compiled regular expression's method; "
            "custom tokenizer callables cannot be exported"
        )
    return {"pattern": rx.pattern, "flags": rx.flags}


def _spacy_spec(spacy_tok: Any) -> dict[str, Any]:
    """The learner's fastai SpacyTokenizer as data: spaCy's patterns and special cases."""
    from fastai.text.core import SpacyTokenizer

    if not isinstance(spacy_tok, SpacyTokenizer):
        raise InputError(
            f"the learner tokenizes with {type(spacy_tok).__name__}; the onnx variant reproduces "
            "fastai's SpacyTokenizer (the default) only"
        )
    return spacy_rules_spec(spacy_tok.pipe.__self__)


def spacy_rules_spec(nlp: Any) -> dict[str, Any]:
    """A spaCy pipeline's tokenizer as data for `pipeline.client.tokenizer.SpacyRules`.

    Raises:
        InputError: the pipeline runs components, or its tokenizer is not spaCy's own class
            driven by compiled regular expressions.
    """
    import spacy
    from spacy.attrs import ORTH, intify_attrs

    if nlp.pipe_names:
        raise InputError(
            f"the learner's spaCy pipeline runs {nlp.pipe_names}; only a blank tokenizer is supported"
        )
    t = nlp.tokenizer
    if type(t).__module__ != "spacy.tokenizer":
        raise InputError(f"spaCy tokenizer of type {type(t).__name__} cannot be exported")
    special = {}
    for chunk, pieces in t.rules.items():
        orths = []
        for p in pieces:
            attrs = intify_attrs(dict(p), strings_map=nlp.vocab.strings, _do_deprecated=True)
            orth = attrs[ORTH]
            orths.append(orth if isinstance(orth, str) else nlp.vocab.strings[orth])
        special[chunk] = orths
    return {
        "type": "spacy",
        "lang": nlp.lang,
        "spacy_version": spacy.__version__,
        "prefix_search": _regex(t.prefix_search),
        "suffix_search": _regex(t.suffix_search),
        "infix_finditer": _regex(t.infix_finditer),
        "token_match": _regex(t.token_match),
        "url_match": _regex(t.url_match),
        "faster_heuristics": bool(t.faster_heuristics),
        "max_cache_size": int(t.max_cache_size),
        "special_cases": dict(sorted(special.items())),
    }


def tokenizer_spec(learn: Any) -> dict[str, Any]:
    """Everything the client needs to turn a text into the learner's token ids, and the labels.

    Raises:
        InputError: the learner's tokenization is not one the client can reproduce (another
            tokenizer than fastai's SpacyTokenizer, a custom rule, a spaCy pipeline).
    """
    tok, num = tokenizer_transforms(learn)
    vocab = [str(x) for x in num.vocab]
    unknown = num.o2i.default_factory() if getattr(num.o2i, "default_factory", None) else 0
    known = set(vocab)
    o2i = lookup_entries(num)  # without the unknown words fastai was asked (they map to xxunk)
    # entries for words outside the vocabulary that map to a real id: typo aliases
    # (pipeline/typo_aliases.py), written down beside the vocabulary
    aliases = {str(k): int(i) for k, i in o2i.items() if k not in known}
    o2i = {k: i for k, i in o2i.items() if k in known}
    if any(not 0 <= i < len(vocab) for i in aliases.values()):
        raise InputError(
            "the learner's vocabulary lookup maps a word to an id outside its vocabulary"
        )
    # Numericalize maps 'xxfake' padding entries to unknown when it built the vocab itself, and
    # to their index when it was given one (ULMFiT): record which, then check the whole mapping.
    unmapped = sorted({t for t in vocab if t not in o2i})
    derived = {t: i for i, t in enumerate(vocab) if t not in unmapped}
    if derived != o2i:
        odd = sorted(k for k in set(o2i) ^ set(derived) if not str(k).startswith("xxfake"))[:3]
        raise InputError(
            "the learner's vocabulary lookup (Numericalize.o2i) does not match its vocabulary "
            f"(e.g. {odd or 'the ids differ'}), so its token ids cannot be written down"
        )
    enc = learn.model[0]
    return {
        "format": FORMAT,
        # version 2 added `aliases`; a file without them stays readable by version-1 clients
        "format_version": FORMAT_VERSION if aliases else 1,
        "rules": [_rule_spec(r) for r in tok.rules],
        "post_rules": [],  # fastai's Tokenizer.encodes(str) applies none at predict time
        "tokenizer": _spacy_spec(tok.tok),
        "special_tokens": [str(x) for x in (num.special_toks or [])],
        "vocab": vocab,
        "unmapped_tokens": unmapped,
        **({"aliases": dict(sorted(aliases.items()))} if aliases else {}),
        "unknown_id": int(unknown),
        "pad_id": int(enc.pad_idx),
        "chunking": {"bptt": int(enc.bptt), "max_len": enc.max_len},
        "labels": [str(x) for x in learn.dls.vocab[1]],
    }
