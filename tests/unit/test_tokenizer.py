"""The client's tokenizer against spaCy itself (no torch, no fastai): same tokens, same ids."""

from __future__ import annotations

import json
import pickle
import random
from pathlib import Path

import pytest

from pipeline.client.tokenizer import SpacyRules, TextTokenizer
from pipeline.errors import InputError
from tests.helpers import tokenizer_spec

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


def test_ids_unknown_tokens_and_unmapped_entries() -> None:
    tok = TextTokenizer(tokenizer_spec())
    assert tok.tokens("Hello world xxfake") == ["xxbos", "xxmaj", "hello", "world", "xxfake"]
    # 'xxfake' pads the vocabulary; fastai's Numericalize maps it to xxunk like any unknown
    assert tok.ids("Hello world xxfake planet") == [2, 3, 4, 5, 0, 0]
    assert tok.chunking.bptt == 72 and tok.chunking.max_len == 1440


def test_aliases_map_misspellings_and_never_override_a_vocabulary_word() -> None:
    tok = TextTokenizer(
        tokenizer_spec(format_version=2, aliases={"helo": 4, "wrold": 5, "world": 4})
    )
    assert tok.ids("helo wrold world plnaet") == [2, 4, 5, 5, 0]


def test_bad_aliases_are_input_errors() -> None:
    for aliases in ({"helo": 7}, {"helo": -1}, {"helo": "4"}, ["helo"]):
        with pytest.raises(InputError, match="aliases must map words to ids inside"):
            TextTokenizer(tokenizer_spec(format_version=2, aliases=aliases))


def test_tokenizer_file_problems_are_input_errors(tmp_path: Path) -> None:
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(tokenizer_spec(rules=["replace_maj", "my_rule"])))
    with pytest.raises(InputError, match="unknown text rule 'my_rule'"):
        TextTokenizer.from_file(path)
    path.write_text(json.dumps(tokenizer_spec(format_version=99)))
    with pytest.raises(InputError, match="format version 99.*upgrade fastai-release"):
        TextTokenizer.from_file(path)
    path.write_text(json.dumps(tokenizer_spec(rules=[{"name": "replace_rep", "kwargs": {"x": 1}}])))
    with pytest.raises(InputError, match="rule 'replace_rep' takes no option x"):
        TextTokenizer.from_file(path)
    path.write_text("{not json")
    with pytest.raises(InputError, match="not a readable tokenizer file"):
        TextTokenizer.from_file(path)
    spec = tokenizer_spec()
    del spec["vocab"]
    path.write_text(json.dumps(spec))
    with pytest.raises(InputError, match="malformed tokenizer file.*vocab"):
        TextTokenizer.from_file(path)


# -- linear time (issue 11, finding 7) ----------------------------------------------------------

ADVERSARIAL_UNITS = [
    ")]",
    "([",
    "a:",
    "a@",
    "'s",
    "\"'",
    "😀🎉",
    "a..",
    "1,",
    "x/",
    "#a",
    "…a",
    "..a",
]


def test_the_affix_search_answers_what_a_plain_search_does(spacy_pair) -> None:
    import re

    from pipeline.client.spacy_rules import _Affix

    _, spec = spacy_pair
    rng = random.Random(3)
    texts = CURATED + fuzz_texts(5, 300, list(spec["special_cases"]))
    texts += [
        "".join(rng.choice(ADVERSARIAL_UNITS) for _ in range(rng.randint(1, 40)))
        for _ in range(300)
    ]
    for kind in ("prefix", "suffix"):
        spec_k = spec[f"{kind}_search"]
        plain = re.compile(spec_k["pattern"], spec_k["flags"]).search
        fast = _Affix(spec_k, kind)
        assert fast._match_at is not None or fast._bounded is not None  # the fast path is taken
        for text in texts:
            for lo, hi in {
                (0, len(text)),
                (rng.randint(0, len(text)), len(text)),
                (0, rng.randint(0, len(text))),
            }:
                m = plain(text[lo:hi])
                want = m.end() - m.start() if m else 0
                assert fast.find(text, lo, hi) == want, (kind, text, lo, hi)


def test_the_linear_url_pattern_accepts_exactly_what_spacys_does(spacy_pair) -> None:
    import re

    from pipeline.client.spacy_rules import _URL_USERINFO, _linear_url

    _, spec = spacy_pair
    url = spec["url_match"]
    assert _URL_USERINFO in url["pattern"]  # spaCy's pattern still has the quadratic group
    slow = re.compile(url["pattern"], url["flags"]).match
    fast = re.compile(_linear_url(url)["pattern"], url["flags"]).match
    rng = random.Random(4)
    pieces = [
        "a",
        "b1",
        ":",
        "@",
        ".",
        "/",
        "-",
        "_",
        "com",
        "http://",
        "www.",
        "x.org",
        "192.168.0.1",
        "é",
        "?",
        "#",
        ":80",
    ]
    texts = ["".join(rng.choice(pieces) for _ in range(rng.randint(1, 12))) for _ in range(5000)]
    texts += [
        "user:pw@example.com/a",
        "a@b@c.com",
        "a:b:c@d.org/x@y",
        "http://a.b.com:8080/p?q=1#f",
    ]
    assert sum(bool(slow(t)) for t in texts) > 100  # the sample holds URLs, not only junk
    assert [bool(slow(t)) for t in texts] == [bool(fast(t)) for t in texts]


def test_adversarial_runs_give_spacys_tokens_in_linear_time(spacy_pair) -> None:
    import time

    nlp, spec = spacy_pair
    mine = SpacyRules(spec)
    for unit in ADVERSARIAL_UNITS:
        text = unit * 60  # small enough for spaCy itself
        assert mine(text) == [t.text for t in nlp(text)], unit
    # spaCy and this port before took 3.7 s on `)]` * 2000 and 1.7 s on `a:` * 8000
    for unit in (")]", "a:", "'s", "😀🎉"):
        start = time.perf_counter()
        mine(unit * 4000)
        assert time.perf_counter() - start < 1.5, unit


def test_input_limits(monkeypatch) -> None:
    from pipeline.client.limits import InputLimits, InputTooLarge

    limits = InputLimits(max_chars=50, max_run=10, max_tokens=5)
    assert limits.check("a short text") == "a short text"
    with pytest.raises(InputTooLarge, match="51 characters, more than the limit of 50") as e:
        limits.check("x " * 25 + "x")
    assert isinstance(e.value, ValueError) and e.value.setting == "max_chars"
    with pytest.raises(InputTooLarge, match="a run of 11 characters without whitespace"):
        limits.check("ok " + "y" * 11)
    with pytest.raises(InputTooLarge, match="6 tokens, more than the limit of 5"):
        limits.check_tokens(6)
    with pytest.raises(InputError, match="expected a str"):
        limits.check(b"bytes")  # type: ignore[arg-type]
    assert InputLimits.unlimited().check("z" * 100_000)
    tok = TextTokenizer(tokenizer_spec(), limits=InputLimits(max_tokens=3))
    with pytest.raises(InputTooLarge, match="4 tokens"):
        tok.ids("hello world planet")
    monkeypatch.setenv("RELEASE_MAX_INPUT_CHARS", "none")
    monkeypatch.setenv("RELEASE_MAX_INPUT_RUN", "64")
    assert InputLimits.from_env() == InputLimits(max_chars=None, max_run=64)
    monkeypatch.setenv("RELEASE_MAX_INPUT_TOKENS", "-1")
    with pytest.raises(InputError, match=r"\$RELEASE_MAX_INPUT_TOKENS: expected a whole number"):
        InputLimits.from_env()
    with pytest.raises(InputError, match="max_run: expected a whole number >= 1"):
        InputLimits(max_run=0)
