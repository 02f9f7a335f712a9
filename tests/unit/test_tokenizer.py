"""The client's tokenizer against spaCy itself (no torch, no fastai): same tokens, same ids."""

from __future__ import annotations

import json
import pickle
import random
from pathlib import Path

import pytest

from pipeline.client.tokenizer import FORMAT, SpacyRules, TextTokenizer
from pipeline.errors import InputError

FASTAI_SPECIALS = ["xxunk", "xxpad", "xxbos", "xxeos", "xxfld", "xxrep", "xxwrep", "xxup", "xxmaj"]

# Texts that reach each branch of spaCy's algorithm: specials found whole, after a prefix or
# suffix, by the final matcher pass (":)" after a word, "''" split as two suffixes), URLs,
# infixes, whitespace runs that become tokens, non-ASCII punctuation and spaces.
CURATED = [
    "",
    " ",
    "xxbos",
    "xxbos xxmaj hello:) and he said ''hi''",
    "hello:)",
    "don't can't won't y'all 'cause ma'am o'clock rock'n'roll",
    "it's (it's) it’s ‘s’ 'em",
    "a.m. 10a.m. (10a.m.) e.g., i.e.) vs. etc.",
    "see http://example.com/a?b=1, www.test.org and foo@bar.com.",
    "(^_^) -_- (-_-) :-) :p <3 </3 :'( xD o.O",
    "a  b",
    "a \n b",
    "a\n b",
    "a \nb",
    "\t",
    " \t ",
    "a\u00a0b",
    "a \u00a0 b",
    "tail ",
    "x/y #tag c++ a-b a--b 3.14 1,000 $5 10% 50km 12:30 __init__ foo.bar() a=1",
    "naïve école 日本語 emoji😀 — – … “quoted” «guillemets»",
]


def fuzz_texts(seed: int, n: int, specials: list[str]) -> list[str]:
    """Random texts from pieces that stress the rules (specials, affixes, case, whitespace)."""
    rng = random.Random(seed)
    pieces = (
        specials
        + CURATED[2:]
        + [
            "Hello",
            "WORLD",
            "ERP",
            "SQL",
            "API's",
            "aaaa",
            "!!!!",
            "??",
            "...",
            "<br />",
            "&amp;",
            "#39;",
            "\\n",
            "the the the the",
            "order",
            "customer",
            "(",
            ")",
            "'",
            "''",
            "``",
            '"',
        ]
    )
    seps = [" ", " ", " ", "", "  ", "\n", "\t", " \n", "\u00a0", "-", "/", "."]
    out = []
    for _ in range(n):
        s = ""
        for _ in range(rng.randint(0, 12)):
            p = rng.choice(pieces)
            r = rng.random()
            p = p.upper() if r < 0.15 else p.capitalize() if r < 0.3 else p
            s += p + rng.choice(seps)
        out.append(s.strip() if rng.random() < 0.3 else s)
    alphabet = "ab.,;:'\"()-/#\\!?$%&*+=<>[]{}@ \n\t’“”…—09AZéÉ😀x_"
    out += ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 25))) for _ in range(n // 4)]
    return out


@pytest.fixture(scope="module")
def spacy_pair():
    """fastai's tokenizer setup (spacy.blank("en") + its special tokens), pickled and loaded
    again as a learner on a server holds it, and the client's SpacyRules built from it."""
    spacy = pytest.importorskip("spacy")  # in the [build] extra; the onnx client never needs it
    from spacy.symbols import ORTH

    from pipeline.onnx_export import spacy_rules_spec

    nlp = spacy.blank("en")
    for w in FASTAI_SPECIALS:
        nlp.tokenizer.add_special_case(w, [{ORTH: w}])
    nlp = pickle.loads(pickle.dumps(nlp))
    return nlp, spacy_rules_spec(nlp)


def test_spacy_rules_give_spacys_tokens(spacy_pair) -> None:
    nlp, spec = spacy_pair
    mine = SpacyRules(json.loads(json.dumps(spec)))  # through JSON, as tokenizer.json
    texts = CURATED + fuzz_texts(0, 2400, list(spec["special_cases"]))
    bad = []
    for t in texts:
        want, got = [x.text for x in nlp(t)], mine(t)
        if want != got:
            bad.append((t, want, got))
    assert not bad, bad[:5]


def test_the_special_case_pass_is_exercised(spacy_pair) -> None:
    # Without spaCy's final matcher pass these curated texts tokenize differently, so the
    # comparison above would catch a port that skipped or broke it.
    _, spec = spacy_pair
    full, bare = SpacyRules(spec), SpacyRules(spec)
    bare._patterns = set()
    assert full("hello:)") == ["hello", ":)"] and bare("hello:)") == ["hello", ":", ")"]
    assert full("said ''hi''") == ["said", "''", "hi", "''"] != bare("said ''hi''")


def _spec(**overrides) -> dict:
    spec = {
        "format": FORMAT,
        "format_version": 1,
        "rules": ["replace_maj", "lowercase"],
        "post_rules": [],
        "tokenizer": {"type": "spacy", "special_cases": {"xxbos": ["xxbos"], "xxmaj": ["xxmaj"]}},
        "vocab": ["xxunk", "xxpad", "xxbos", "xxmaj", "hello", "world", "xxfake"],
        "unmapped_tokens": ["xxfake"],
        "unknown_id": 0,
        "pad_id": 1,
        "chunking": {"bptt": 72, "max_len": 1440},
        "labels": ["a", "b"],
    }
    spec.update(overrides)
    return spec


def test_ids_unknown_tokens_and_unmapped_entries() -> None:
    tok = TextTokenizer(_spec())
    assert tok.tokens("Hello world xxfake") == ["xxbos", "xxmaj", "hello", "world", "xxfake"]
    # 'xxfake' pads the vocabulary; fastai's Numericalize maps it to xxunk like any unknown
    assert tok.ids("Hello world xxfake planet") == [2, 3, 4, 5, 0, 0]
    assert tok.chunking.bptt == 72 and tok.chunking.max_len == 1440


def test_tokenizer_file_problems_are_input_errors(tmp_path: Path) -> None:
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(_spec(rules=["replace_maj", "my_rule"])))
    with pytest.raises(InputError, match="unknown text rule 'my_rule'"):
        TextTokenizer.from_file(path)
    path.write_text(json.dumps(_spec(format_version=99)))
    with pytest.raises(InputError, match="format version 99.*upgrade fastai-release"):
        TextTokenizer.from_file(path)
    path.write_text(json.dumps(_spec(rules=[{"name": "replace_rep", "kwargs": {"x": 1}}])))
    with pytest.raises(InputError, match="rule 'replace_rep' takes no option x"):
        TextTokenizer.from_file(path)
    path.write_text("{not json")
    with pytest.raises(InputError, match="not a readable tokenizer file"):
        TextTokenizer.from_file(path)
    spec = _spec()
    del spec["vocab"]
    path.write_text(json.dumps(spec))
    with pytest.raises(InputError, match="malformed tokenizer file.*vocab"):
        TextTokenizer.from_file(path)
