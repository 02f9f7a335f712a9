"""fastai's text tokenization and numericalization, for servers without torch, fastai or spaCy.

A learner built by this pipeline tokenizes a text (in `learn.predict`) with fastai's `Tokenizer`
transform: the text rules in order (`fix_html`, `replace_rep`, `replace_wrep`, `spec_add_spaces`,
`rm_useless_spaces`, `replace_all_caps`, `replace_maj`, `lowercase`), then fastai's
`SpacyTokenizer`, which is `spacy.blank("en").tokenizer` plus fastai's special tokens as special
cases; then `Numericalize` maps each token through the vocabulary (unknown tokens to `xxunk`).
At predict time fastai applies no post-rules (`replace_space` runs only when a training set is
tokenized), so neither does this module.

`TextTokenizer` here is that pipeline, read from a release's `tokenizer.json`; its parts have a
module each: the rules (`fastai_rules.py`, copied from fastai 2.8.12), spaCy's algorithm over the
exported patterns (`spacy_rules.py`), what a file may hold (`tokenizer_format.py`). The build
refuses to release unless the token ids of every train and eval text are identical to fastai's,
so a difference is found at build time, not on a server. The names of those modules that users
and the build import from here are re-exported.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.client.fastai_rules import (
    BOS,
    EOS,
    FLD,
    PAD,
    RULE_OPTIONS,
    RULES,
    TK_MAJ,
    TK_REP,
    TK_UP,
    TK_WREP,
    UNK,
    rule_from_spec,
)
from pipeline.client.limits import InputLimits
from pipeline.client.spacy_rules import SpacyRules
from pipeline.client.tokenizer_format import (
    FORMAT,
    FORMAT_VERSION,
    spec_problems,
    stock_digest,
    stock_language,
)
from pipeline.errors import InputError

__all__ = [
    "BOS",
    "EOS",
    "FLD",
    "FORMAT",
    "FORMAT_VERSION",
    "PAD",
    "RULES",
    "RULE_OPTIONS",
    "TK_MAJ",
    "TK_REP",
    "TK_UP",
    "TK_WREP",
    "UNK",
    "Chunking",
    "SpacyRules",
    "TextTokenizer",
    "spec_problems",
    "stock_digest",
    "stock_language",
]


@dataclass(frozen=True)
class Chunking:
    """How fastai's SentenceEncoder reads a long text: chunks of `bptt` tokens, hidden state
    carried over; only the outputs of the last `max_len` tokens (None: all) are pooled."""

    bptt: int
    max_len: int | None


class TextTokenizer:
    """Text -> token ids, exactly as the learner's `learn.predict` computes them.

    Build one with `TextTokenizer.from_file(path)` (a release's tokenizer.json). `tokens` and
    `ids` refuse a text over `limits` (default `InputLimits()`) before any rule runs.
    """

    def __init__(
        self,
        spec: dict[str, Any],
        source: str = "tokenizer.json",
        *,
        limits: InputLimits | None = None,
    ):
        self.source = source
        self.limits = InputLimits() if limits is None else limits
        if spec.get("format") != FORMAT or not isinstance(spec.get("format_version"), int):
            raise InputError(f"{source}: not a fastai-release tokenizer file")
        if spec["format_version"] > FORMAT_VERSION:
            raise InputError(
                f"{source}: format version {spec['format_version']}; this fastai-release reads up "
                f"to {FORMAT_VERSION}: upgrade fastai-release"
            )
        problems = spec_problems(spec)
        if problems:
            shown = problems[:10] + (
                [f"... and {len(problems) - 10} more"] if len(problems) > 10 else []
            )
            raise InputError(f"{source}: malformed tokenizer file ({'; '.join(shown)})")
        self.spec = spec
        self._rules = [rule_from_spec(r, f"{source}: rules") for r in spec["rules"]]
        self._post_rules = [
            rule_from_spec(r, f"{source}: post_rules") for r in spec.get("post_rules", [])
        ]
        tok = spec["tokenizer"]
        if tok.get("type") != "spacy":
            raise InputError(
                f"{source}: tokenizer type {tok.get('type')!r}; this client reproduces spaCy's only"
            )
        self._words = SpacyRules(tok)
        self.vocab: list[str] = list(spec["vocab"])
        unmapped = set(spec.get("unmapped_tokens", []))
        self._o2i = {t: i for i, t in enumerate(self.vocab) if t not in unmapped}
        aliases = spec.get("aliases", {})
        if not isinstance(aliases, dict) or not all(
            isinstance(i, int) and 0 <= i < len(self.vocab) for i in aliases.values()
        ):
            raise InputError(f"{source}: aliases must map words to ids inside the vocabulary")
        # a vocabulary entry always wins over an alias of the same spelling
        self._o2i = {**{str(k): i for k, i in aliases.items()}, **self._o2i}
        self.unknown_id = int(spec.get("unknown_id", 0))
        self.pad_id = int(spec.get("pad_id", 1))
        self.labels: list[str] = [str(x) for x in spec["labels"]]
        c = spec["chunking"]
        self.chunking = Chunking(
            int(c["bptt"]), None if c.get("max_len") is None else int(c["max_len"])
        )

    @classmethod
    def from_file(cls, path: Path, *, limits: InputLimits | None = None) -> TextTokenizer:
        """Read a tokenizer.json.

        Raises:
            InputError: the file is not valid JSON or not a tokenizer file this version reads.
        """
        path = Path(path)
        try:
            spec = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise InputError(f"{path}: not a readable tokenizer file ({e})") from e
        if not isinstance(spec, dict):
            raise InputError(f"{path}: expected a JSON object")
        try:
            return cls(spec, str(path), limits=limits)
        except (KeyError, TypeError, re.error) as e:
            raise InputError(f"{path}: malformed tokenizer file ({type(e).__name__}: {e})") from e

    def tokens(self, text: str) -> list[str]:
        """The tokens fastai's Tokenizer transform gives `text`.

        Raises:
            InputTooLarge: `text` is over `self.limits`.
        """
        self.limits.check(text)
        for rule in self._rules:
            text = rule(text)
        toks = self._words(text)
        for rule in self._post_rules:
            toks = [rule(t) for t in toks]
        return toks

    def ids(self, text: str) -> list[int]:
        """The token ids fastai's Tokenizer + Numericalize give `text` (unknown -> xxunk).

        Raises:
            InputTooLarge: `text`, or its tokens, are over `self.limits`.
        """
        o2i, unk = self._o2i, self.unknown_id
        toks = self.tokens(text)
        self.limits.check_tokens(len(toks))
        return [o2i.get(t, unk) for t in toks]

    def ids_many(self, texts: Iterable[str]) -> list[list[int]]:
        return [self.ids(t) for t in texts]
