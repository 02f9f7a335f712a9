"""What a tokenizer file (`tokenizer.json`, format `FORMAT`) may hold, and which spaCy
tokenizers are stock.

The format is written by the build (`pipeline/onnx_export.py`, from `learner_spec.tokenizer_spec`)
and read by the client (`tokenizer.TextTokenizer`); `spec_problems` is the one check of a file's
shape and size, `stock_language` tells spaCy's own tokenizers (pipeline/client/spacy_stock.py)
from customized ones, which an unauthenticated file may not carry.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

FORMAT = "fastai-release/tokenizer"
FORMAT_VERSION = 2  # 2: `aliases` (typo aliases: words outside the vocabulary -> an id)

# tokenizer.json is data, but data that sets how much work every query costs: how many special
# cases are registered at load, how large the lookup tables are, how long the compiled patterns
# are. These bounds hold in every trust mode; each is far above what real builds write (the
# demo release: vocabulary 6,264, about 86k typo aliases, spaCy's English special cases 1,347 and
# patterns up to 16k characters; spaCy's largest stock language, Indonesian, 15,963 special
# cases and a 1.45 MB token_match pattern), so they refuse only files no build writes.
MAX_VOCAB = 500_000  # fastai's max_vocab default is 60,000
MAX_ALIASES = 2_000_000  # typo aliases grow with the vocabulary: ~14 per word in the demo
MAX_RULES = 64  # fastai's default rules: 8
MAX_SPECIAL_CASES = 100_000  # spaCy 3.8.18: 1,347 for English, 15,963 at most
MAX_SPECIAL_CASE_CHARS = 256  # spaCy 3.8.18: 31 characters at most
MAX_PIECES = 64  # pieces of one special case; spaCy 3.8.18: 3 at most
MAX_PATTERN_CHARS = 4_000_000  # spaCy 3.8.18: 1.45 MB at most (a token_match)
MAX_WORD_CHARS = 10_000  # one vocabulary word, alias, label or special token
MAX_LABELS = 100_000
MAX_BPTT = 100_000  # fastai's default: 72 tokens per chunk
MAX_CACHE_SIZE = 100_000  # spaCy's default: 10,000 cached chunks
# The regular-expression flags a pattern may carry (spaCy's use re.U and re.I); re.DEBUG would
# print to stdout on compile, re.LOCALE does not apply to str patterns.
_PATTERN_FLAGS = re.I | re.M | re.S | re.U | re.X | re.A
_PATTERN_SLOTS = ("prefix_search", "suffix_search", "infix_finditer", "token_match", "url_match")
_FASTAI_SPECIAL = re.compile(r"xx[a-z]{1,16}")  # fastai's special tokens: xxunk, xxbos, ...


def found(value: Any) -> str:
    """A value as a message quotes it: its type and the start of its repr."""
    text = repr(value)
    return f"{type(value).__name__} {text[:60]}{'…' if len(text) > 60 else ''}"


class _Problems:
    """The problems found so far in one tokenizer file, and the checks that add to them."""

    def __init__(self, spec: dict[str, Any]):
        self.spec = spec
        self.found: list[str] = []

    def field(self, key: str, typ: type | tuple[type, ...]) -> Any:
        """`spec[key]` when it is there and of type `typ`, else None (and a problem)."""
        if key not in self.spec:
            self.found.append(f"{key}: missing")
            return None
        value = self.spec[key]
        if not isinstance(value, typ) or (isinstance(value, bool) and typ is int):
            self.found.append(
                f"{key}: expected {getattr(typ, '__name__', typ)}, found {found(value)}"
            )
            return None
        return value

    def count(self, key: str, value: Any, cap: int) -> bool:
        """Whether `value` is there and holds at most `cap` entries (else a problem)."""
        if value is not None and len(value) > cap:
            self.found.append(f"{key}: {len(value):,} entries, more than the {cap:,} allowed")
            return False
        return value is not None

    def words(self, key: str, value: Any) -> None:
        """Every entry of `value` a string of at most MAX_WORD_CHARS (else a problem)."""
        bad = next(
            (i for i, w in enumerate(value) if not isinstance(w, str) or len(w) > MAX_WORD_CHARS),
            None,
        )
        if bad is not None:
            self.found.append(
                f"{key}[{bad}]: expected a word of at most {MAX_WORD_CHARS:,} characters, "
                f"found {found(value[bad])}"
            )

    def word_list(self, key: str, cap: int) -> Any:
        """`spec[key]`, a list of at most `cap` words, or None (and the problems)."""
        value = self.field(key, list)
        if self.count(key, value, cap):
            self.words(key, value)
        return value

    def aliases(self, vocab: list[Any] | None) -> None:
        """`aliases`, when there: words mapped to ids inside the vocabulary (checked when the
        vocabulary itself is a list)."""
        aliases = self.spec.get("aliases")
        if aliases is not None and not isinstance(aliases, dict):
            self.found.append(
                f"aliases must map words to ids inside the vocabulary, found {found(aliases)}"
            )
            return
        if not self.count("aliases", aliases, MAX_ALIASES) or vocab is None:
            return
        n_vocab = len(vocab)
        bad = next(
            (
                (k, i)
                for k, i in aliases.items()
                if not (isinstance(i, int) and not isinstance(i, bool) and 0 <= i < n_vocab)
                or len(k) > MAX_WORD_CHARS
            ),
            None,
        )
        if bad is not None:
            self.found.append(
                f"aliases must map words to ids inside the vocabulary (0 to {n_vocab - 1}); "
                f"found {bad[0][:60]!r}: {found(bad[1])}"
            )

    def ids(self, n_vocab: int) -> None:
        """`unknown_id` and `pad_id`: ids inside the vocabulary."""
        for key, default in (("unknown_id", 0), ("pad_id", 1)):
            value = self.spec.get(key, default)
            if (
                not isinstance(value, int)
                or isinstance(value, bool)
                or not 0 <= value < max(n_vocab, 1)
            ):
                self.found.append(
                    f"{key}: expected an id inside the vocabulary, found {found(value)}"
                )

    def chunking(self) -> None:
        """`chunking`: a bptt of 1 to MAX_BPTT, a max_len that is null or a count."""
        chunking = self.field("chunking", dict)
        if chunking is None:
            return
        bptt, max_len = chunking.get("bptt"), chunking.get("max_len")
        if not isinstance(bptt, int) or isinstance(bptt, bool) or not 1 <= bptt <= MAX_BPTT:
            self.found.append(f"chunking.bptt: expected 1 to {MAX_BPTT:,}, found {found(bptt)}")
        if max_len is not None and (
            not isinstance(max_len, int) or isinstance(max_len, bool) or max_len < 0
        ):
            self.found.append(
                f"chunking.max_len: expected null or a count >= 0, found {found(max_len)}"
            )


def spec_problems(spec: dict[str, Any]) -> list[str]:
    """What is wrong with a tokenizer file's shape or size, one line per problem (empty: fine).

    Checks types, the bounds above and that ids stay inside the vocabulary; names, options and
    patterns are checked where they are used.
    """
    p = _Problems(spec)
    for key in ("rules", "post_rules"):
        value = p.field(key, list) if key == "rules" or key in spec else None
        p.count(key, value, MAX_RULES)
    vocab = p.word_list("vocab", MAX_VOCAB)
    n_vocab = len(vocab) if isinstance(vocab, list) else 0
    for key in ("unmapped_tokens", "special_tokens"):
        if key in spec:
            p.word_list(key, MAX_VOCAB)
    p.aliases(vocab)
    p.ids(n_vocab)
    p.word_list("labels", MAX_LABELS)
    p.chunking()
    tok = p.field("tokenizer", dict)
    if tok is not None:
        p.found.extend(_spacy_problems(tok))
    return p.found


def _spacy_problems(tok: dict[str, Any]) -> list[str]:
    problems: list[str] = []
    for slot in _PATTERN_SLOTS:
        rx = tok.get(slot)
        if rx is None:
            continue
        pattern = rx.get("pattern") if isinstance(rx, dict) else None
        flags = rx.get("flags", 0) if isinstance(rx, dict) else None
        if not isinstance(pattern, str) or len(pattern) > MAX_PATTERN_CHARS:
            problems.append(
                f"tokenizer.{slot}: expected {{pattern, flags}} with a pattern of at most "
                f"{MAX_PATTERN_CHARS:,} characters, found {found(rx)}"
            )
        if not isinstance(flags, int) or isinstance(flags, bool) or flags & ~_PATTERN_FLAGS:
            problems.append(
                f"tokenizer.{slot}.flags: expected a combination of re.I, M, S, U, X, A "
                f"({int(_PATTERN_FLAGS)} at most), found {found(flags)}"
            )
    if not isinstance(tok.get("faster_heuristics", True), bool):
        problems.append(
            f"tokenizer.faster_heuristics: expected true or false, found {found(tok['faster_heuristics'])}"
        )
    size = tok.get("max_cache_size", 10000)
    if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= MAX_CACHE_SIZE:
        problems.append(
            f"tokenizer.max_cache_size: expected 0 to {MAX_CACHE_SIZE:,}, found {found(size)}"
        )
    cases = tok.get("special_cases", {})
    if not isinstance(cases, dict):
        problems.append(f"tokenizer.special_cases: expected an object, found {found(cases)}")
    elif len(cases) > MAX_SPECIAL_CASES:
        problems.append(
            f"tokenizer.special_cases: {len(cases):,} entries, more than the "
            f"{MAX_SPECIAL_CASES:,} allowed"
        )
    else:
        for chunk, pieces in cases.items():
            if (
                not 0 < len(chunk) <= MAX_SPECIAL_CASE_CHARS
                or not isinstance(pieces, list)
                or not 0 < len(pieces) <= MAX_PIECES
                or not all(isinstance(p, str) for p in pieces)
            ):
                problems.append(
                    f"tokenizer.special_cases[{chunk[:60]!r}]: expected 1 to {MAX_PIECES} "
                    f"strings for a case of 1 to {MAX_SPECIAL_CASE_CHARS} characters, "
                    f"found {found(pieces)}"
                )
                break
    return problems


def stock_digest(tok: dict[str, Any]) -> str:
    """The sha256 of a tokenizer file's spaCy part as spaCy itself defines it for a language:
    the five patterns, `faster_heuristics` and the special cases other than fastai's special
    tokens (`xxunk`, `xxbos`, ...: each its own single piece, added by fastai). The cache size,
    language and version fields are left out (the first is bounded, the others informational)."""
    cases = {
        k: v
        for k, v in tok.get("special_cases", {}).items()
        if not (_FASTAI_SPECIAL.fullmatch(k) and v == [k])
    }
    core = {slot: tok.get(slot) for slot in _PATTERN_SLOTS}
    core["faster_heuristics"] = tok.get("faster_heuristics", True)
    core["special_cases"] = cases
    text = json.dumps(core, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def stock_language(tok: dict[str, Any]) -> str | None:
    """The spaCy language (and version) whose stock tokenizer this is, or None: an
    unauthenticated tokenizer file may only be one of these (pipeline/client/spacy_stock.py)."""
    from pipeline.client.spacy_stock import STOCK

    extra = [
        k
        for k, v in tok.get("special_cases", {}).items()
        if _FASTAI_SPECIAL.fullmatch(k) and v == [k]
    ]
    if len(extra) > 64:  # fastai adds 9
        return None
    return STOCK.get(stock_digest(tok))
