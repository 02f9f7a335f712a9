"""fastai's text tokenization and numericalization, for servers without torch, fastai or spaCy.

A learner built by this pipeline tokenizes a text (in `learn.predict`) with fastai's `Tokenizer`
transform: the text rules in order (`fix_html`, `replace_rep`, `replace_wrep`, `spec_add_spaces`,
`rm_useless_spaces`, `replace_all_caps`, `replace_maj`, `lowercase`), then fastai's
`SpacyTokenizer`, which is `spacy.blank("en").tokenizer` plus fastai's special tokens as special
cases; then `Numericalize` maps each token through the vocabulary (unknown tokens to `xxunk`).
At predict time fastai applies no post-rules (`replace_space` runs only when a training set is
tokenized), so neither does this module.

spaCy's tokenizer is regex-driven: prefix, suffix and infix patterns, a URL matcher and a table of
special cases, applied by a fixed algorithm (`spacy/tokenizer.pyx`: `_tokenize_affixes`,
`_split_affixes`, `_attach_tokens`, then `_apply_special_cases` over the special cases that
contain affixes or a space). The build exports the learner's own patterns and special cases into
`tokenizer.json`; `SpacyRules` below runs the same algorithm on them with Python's `re`, which is
what spaCy itself calls. The build refuses to release unless the token ids of every train and
eval text are identical to fastai's, so a difference is found at build time, not on a server.

The fastai rules are copied from fastai 2.8.12 (`fastai/text/core.py`, Apache-2.0).
"""

from __future__ import annotations

import hashlib
import html
import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.client.limits import InputLimits
from pipeline.errors import InputError

FORMAT = "fastai-release/tokenizer"
FORMAT_VERSION = 2  # 2: `aliases` (typo aliases: words outside the vocabulary -> an id)

UNK, PAD, BOS, EOS, FLD, TK_REP, TK_WREP, TK_UP, TK_MAJ = [
    "xxunk",
    "xxpad",
    "xxbos",
    "xxeos",
    "xxfld",
    "xxrep",
    "xxwrep",
    "xxup",
    "xxmaj",
]

# --- fastai's text rules (fastai/text/core.py, verbatim in behaviour) -------------------------

_re_spec = re.compile(r"([/#\\])")
_re_space = re.compile(" {2,}")
_re_rep = re.compile(r"(\S)(\1{2,})")
_re_wrep = re.compile(r"(?:\s|^)(\w+)\s+((?:\1\s+)+)\1(\s|\W|$)")
_re_all_caps = re.compile(r"(\s|^)([A-Z]+[^a-z\s]*)(?=(\s|$))")
_re_maj = re.compile(r"(\s|^)([A-Z][^A-Z\s]*)(?=(\s|$))")


def spec_add_spaces(t: str) -> str:
    """Add spaces around / and #."""
    return _re_spec.sub(r" \1 ", t)


def rm_useless_spaces(t: str) -> str:
    """Remove multiple spaces."""
    return _re_space.sub(" ", t)


def replace_rep(t: str) -> str:
    """Replace character repetitions: cccc -> xxrep 4 c."""

    def _replace_rep(m: re.Match[str]) -> str:
        c, cc = m.groups()
        return f" {TK_REP} {len(cc) + 1} {c} "

    return _re_rep.sub(_replace_rep, t)


def replace_wrep(t: str) -> str:
    """Replace word repetitions: word word word word -> xxwrep 4 word."""

    def _replace_wrep(m: re.Match[str]) -> str:
        c, cc, e = m.groups()
        return f" {TK_WREP} {len(cc.split()) + 2} {c} {e}"

    return _re_wrep.sub(_replace_wrep, t)


def fix_html(x: str) -> str:
    """Various messy things seen in documents."""
    x = (
        x.replace("#39;", "'")
        .replace("amp;", "&")
        .replace("#146;", "'")
        .replace("nbsp;", " ")
        .replace("#36;", "$")
        .replace("\\n", "\n")
        .replace("quot;", "'")
        .replace("<br />", "\n")
        .replace('\\"', '"')
        .replace("<unk>", UNK)
        .replace(" @.@ ", ".")
        .replace(" @-@ ", "-")
        .replace("...", " …")
    )
    return html.unescape(x)


def replace_all_caps(t: str) -> str:
    """Replace tokens in ALL CAPS by their lower version and add xxup before."""

    def _replace_all_caps(m: re.Match[str]) -> str:
        tok = f"{TK_UP} " if len(m.groups()[1]) > 1 else ""
        return f"{m.groups()[0]}{tok}{m.groups()[1].lower()}"

    return _re_all_caps.sub(_replace_all_caps, t)


def replace_maj(t: str) -> str:
    """Replace tokens in Sentence Case by their lower version and add xxmaj before."""

    def _replace_maj(m: re.Match[str]) -> str:
        tok = f"{TK_MAJ} " if len(m.groups()[1]) > 1 else ""
        return f"{m.groups()[0]}{tok}{m.groups()[1].lower()}"

    return _re_maj.sub(_replace_maj, t)


def lowercase(t: str, add_bos: bool = True, add_eos: bool = False) -> str:
    """Lowercase `t`, with xxbos before (and xxeos after when asked)."""
    return (f"{BOS} " if add_bos else "") + t.lower().strip() + (f" {EOS}" if add_eos else "")


def replace_space(t: str) -> str:
    """Replace embedded spaces in a token with U+2581 (a fastai post-rule)."""
    return t.replace(" ", "▁")


# Every rule this client can apply, by the name fastai gives it. Keyword options (tokenizer.json
# "rules": [{"name": "lowercase", "kwargs": {"add_eos": true}}]) are allowed only where listed.
RULES: dict[str, Callable[..., str]] = {
    f.__name__: f
    for f in (
        fix_html,
        replace_rep,
        replace_wrep,
        spec_add_spaces,
        rm_useless_spaces,
        replace_all_caps,
        replace_maj,
        lowercase,
        replace_space,
    )
}
RULE_OPTIONS: dict[str, frozenset[str]] = {"lowercase": frozenset({"add_bos", "add_eos"})}


def _rule(spec: Any, where: str) -> Callable[[str], str]:
    if isinstance(spec, str):
        name, kwargs = spec, {}
    elif isinstance(spec, dict):
        name, kwargs = spec.get("name"), spec.get("kwargs")
    else:
        raise InputError(f"{where}: a rule is a name or {{name, kwargs}}, found {_found(spec)}")
    if not isinstance(name, str) or name not in RULES:
        raise InputError(
            f"{where}: unknown text rule {str(name)[:60]!r}; this client knows {', '.join(RULES)} "
            "(a newer fastai-release may know more)"
        )
    kwargs = kwargs or {}
    if not isinstance(kwargs, dict):
        raise InputError(
            f"{where}: rule {name!r}: kwargs must be an object, found {_found(kwargs)}"
        )
    bad = set(kwargs) - RULE_OPTIONS.get(name, frozenset())
    if bad:
        raise InputError(f"{where}: rule {name!r} takes no option {', '.join(sorted(bad))[:200]}")
    if not all(isinstance(v, bool) for v in kwargs.values()):
        raise InputError(f"{where}: rule {name!r}: options are true or false, found {kwargs!r}")
    fn = RULES[name]
    return (lambda t: fn(t, **kwargs)) if kwargs else fn


# --- spaCy's tokenizer algorithm --------------------------------------------------------------


def _compile(spec: dict[str, Any] | None, kind: str) -> Callable[..., Any] | None:
    if spec is None:
        return None
    rx = re.compile(spec["pattern"], spec.get("flags", 0))
    return getattr(rx, kind)


# spaCy's affix patterns are alternations of anchored pieces (`^\(`, `^\.\.+`, `km$`). Searched
# as they are, a suffix pattern is tried at every position of the string, and the affix loop
# calls it once per affix it strips, each time on a new copy of what is left: quadratic in a
# run such as `)]` * 4000 (spaCy has the same curve). `_Affix.find(s, lo, hi)` gives the answer
# `pattern.search(s[lo:hi])` gives, in time that does not grow with `hi - lo` for the pieces of
# bounded width; tests/unit/test_tokenizer.py compares it with spaCy on every curated and fuzzed
# text, and the build's parity gate with fastai on every train and eval text:
#   - a prefix pattern whose every piece starts with `^` can only match at `lo`: it is matched
#     there, by the same pattern without its `^`s (when no piece looks behind or tests a word
#     boundary, which could see before `lo`; otherwise on the slice);
#   - a suffix piece that ends with `$` and matches at most W characters can only start in the
#     last W characters: it is searched in those, plus as many before as its lookbehinds read;
#   - pieces of unbounded width (`\.\.+$`) are searched on the whole slice, as spaCy does; they
#     are few and short, and the longest run without whitespace is capped before tokenization
#     (`pipeline.client.limits`), which bounds what they cost.
_WINDOW_MAX = 256  # a suffix piece that may match more characters than this counts as unbounded


def _top_level_pieces(pattern: str) -> list[str] | None:
    """`pattern` split at its top-level `|`, or None when it has global flags or is unbalanced."""
    if re.match(r"\(\?[aiLmsux]+\)", pattern):
        return None
    pieces, depth, start, i, in_class = [], 0, 0, 0, False
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            i += 2
            continue
        if in_class:
            if c == "]":
                in_class = False
        elif c == "[":
            in_class = True
            if pattern[i + 1 : i + 2] == "^":
                i += 1
            if pattern[i + 1 : i + 2] == "]":  # a literal ] first in a class
                i += 1
        elif c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
        elif c == "|" and depth == 0:
            pieces.append(pattern[start:i])
            start = i + 1
        i += 1
    if depth != 0 or in_class:
        return None
    pieces.append(pattern[start:])
    return pieces


@dataclass(frozen=True)
class _Shape:
    """What the affix search needs to know about one piece of a pattern."""

    starts: bool  # the first item is `^`
    ends: bool  # the last item is `$`
    width: int  # the most characters it can match (lookarounds excluded)
    behind: int  # the most characters its lookbehinds read before the match
    other_anchors: bool  # `^`/`$` elsewhere, `\b`, `\B`, `\A`, `\Z`


def _shape(piece: str, flags: int) -> _Shape | None:
    """The shape of one piece, or None when the parser cannot tell (then plain search is used)."""
    try:
        from re import _constants as c
        from re import _parser  # the parser `re` itself uses; only read here

        parsed = _parser.parse(piece, flags)
        items = list(parsed)
        width = parsed.getwidth()[1]
    except Exception:
        return None
    if not items:
        return None
    starts = items[0] == (c.AT, c.AT_BEGINNING)
    ends = items[-1] == (c.AT, c.AT_END)
    behind, other = 0, False
    inner = items[1 if starts else 0 : -1 if ends else None]
    stack: list[Any] = [inner]
    while stack:
        node = stack.pop()
        if isinstance(node, _parser.SubPattern):
            stack.append(list(node))
        elif isinstance(node, list | tuple):
            if len(node) == 2 and node[0] is c.AT:
                other = True
            elif len(node) == 2 and node[0] in (c.ASSERT, c.ASSERT_NOT) and node[1][0] == -1:
                behind = max(behind, node[1][1].getwidth()[1])
                stack.append(node[1][1])
            else:
                stack.extend(x for x in node if isinstance(x, list | tuple | _parser.SubPattern))
    return _Shape(starts, ends, width, behind, other)


class _Affix:
    """`find(s, lo, hi)`: the length of the affix `pattern.search(s[lo:hi])` finds, spaCy's
    `find_prefix` / `find_suffix`, without scanning or copying the whole slice (see above)."""

    def __init__(self, spec: dict[str, Any], kind: str):
        flags = spec.get("flags", 0)
        self._search = re.compile(spec["pattern"], flags).search
        self._match_at: Callable[..., Any] | None = None  # prefix: match at lo, unanchored
        self._match: Callable[..., Any] | None = None  # prefix: match on the slice
        self._bounded: Callable[..., Any] | None = None  # suffix: pieces of bounded width
        self._unbounded: Callable[..., Any] | None = None  # suffix: the others
        self._window = self._behind = 0
        pieces = _top_level_pieces(spec["pattern"])
        shapes = [_shape(p, flags) for p in pieces or []]
        if not pieces or any(s is None or s.other_anchors for s in shapes):
            return  # plain search: always right, possibly slow
        known = [s for s in shapes if s is not None]
        if kind == "prefix" and all(
            s.starts and p.startswith("^") for p, s in zip(pieces, known, strict=True)
        ):
            self._match = re.compile(spec["pattern"], flags).match
            if not any(s.behind for s in known):
                self._match_at = re.compile("|".join(p[1:] for p in pieces), flags).match
        elif kind == "suffix" and all(s.ends for s in known):
            pairs = list(zip(pieces, known, strict=True))
            bounded = [(p, s) for p, s in pairs if s.width <= _WINDOW_MAX]
            unbounded = [p for p, s in pairs if s.width > _WINDOW_MAX]
            if bounded:
                self._bounded = re.compile("|".join(p for p, _ in bounded), flags).search
                self._window = max(s.width for _, s in bounded)
                self._behind = max(s.behind for _, s in bounded)
            if unbounded:
                self._unbounded = re.compile("|".join(unbounded), flags).search

    def find(self, s: str, lo: int = 0, hi: int | None = None) -> int:
        hi = len(s) if hi is None else hi
        if lo >= hi:
            m = self._search("")
            return m.end() - m.start() if m is not None else 0
        if self._match_at is not None:
            m = self._match_at(s, lo, hi)
            return m.end() - m.start() if m is not None else 0
        if self._match is not None:
            m = self._match(s[lo:hi])
            return m.end() - m.start() if m is not None else 0
        if (self._bounded is None and self._unbounded is None) or s[hi - 1] == "\n":
            # plain search; `$` also matches before a final newline, where pieces may end apart
            m = self._search(s[lo:hi])
            return m.end() - m.start() if m is not None else 0
        # Every piece ends at `hi`, so the leftmost start is the answer, whichever piece it is.
        best = None
        if self._bounded is not None:
            first = max(lo, hi - self._window)  # no bounded piece can start before
            context = max(lo, first - self._behind - 1)  # what its lookbehinds may read
            m = self._bounded(s[context:hi], first - context)
            if m is not None:
                best = (m.start() + context, m.end() + context)
        if self._unbounded is not None:
            m = self._unbounded(s[lo:hi])
            if m is not None and (best is None or m.start() + lo < best[0]):
                best = (m.start() + lo, m.end() + lo)
        return best[1] - best[0] if best is not None else 0


# spaCy's URL pattern (`spacy/lang/tokenizer_exceptions.py`, URL_PATTERN) starts with an optional
# user-info group `(?:\S+(?::\S*)?@)?` that backtracks quadratically on a run like `a:a:a:...`
# (16 k characters: 1.7 s). `\S+(?::\S*)?@` and `\S+@` describe the same strings (`x:y` with x
# non-empty is itself a non-empty run of non-spaces), and the pattern is anchored at both ends and
# only asked whether it matches, so the rewrite changes no answer; tests/unit/test_tokenizer.py
# compares both forms on random strings.
_URL_USERINFO = r"(?:\S+(?::\S*)?@)?"
_URL_USERINFO_LINEAR = r"(?:\S+@)?"


def _linear_url(spec: dict[str, Any] | None) -> dict[str, Any] | None:
    if spec is None or _URL_USERINFO not in spec["pattern"]:
        return spec
    return {**spec, "pattern": spec["pattern"].replace(_URL_USERINFO, _URL_USERINFO_LINEAR)}


class SpacyRules:
    """spaCy's `Tokenizer.__call__` (v3, `spacy/tokenizer.pyx`) over exported patterns and special
    cases. Method names follow the Cython ones so the two can be read side by side.

    It keeps spaCy's chunk cache, with its one observable quirk: registering a special case that
    holds affixes or a space tokenizes it without special cases and caches the pieces, and spaCy
    registers them in sorted order when a pickled learner is loaded. The last one's pieces stay in
    the cache; replaying the same registrations reproduces that state.
    """

    def __init__(self, spec: dict[str, Any]):
        self._prefix = (
            _Affix(spec["prefix_search"], "prefix") if spec.get("prefix_search") else None
        )
        self._suffix = (
            _Affix(spec["suffix_search"], "suffix") if spec.get("suffix_search") else None
        )
        self.infix_finditer = _compile(spec.get("infix_finditer"), "finditer")
        self.token_match = _compile(spec.get("token_match"), "match")
        self.url_match = _compile(_linear_url(spec.get("url_match")), "match")
        self.faster_heuristics = bool(spec.get("faster_heuristics", True))
        self.max_cache_size = int(spec.get("max_cache_size", 10000))
        self._specials: dict[str, tuple[str, ...]] = {}
        self._longest_special = 0
        self._cache: dict[str, tuple[str, ...]] = {}
        self._patterns: set[tuple[str, ...]] = set()
        self._first_tokens: set[str] = set()
        self._longest = 0
        for chunk, orths in sorted(spec.get("special_cases", {}).items()):
            self.add_special_case(chunk, orths)

    # spaCy: Tokenizer.add_special_case (the PhraseMatcher becomes a set of token tuples)
    def add_special_case(self, string: str, orths: Sequence[str]) -> None:
        if "".join(orths) != string:
            raise InputError(
                f"special case {string!r}: its pieces {list(orths)!r} do not join to it"
            )
        self._specials[string] = tuple(orths)
        self._longest_special = max(self._longest_special, len(string))
        self._cache.clear()
        if (
            not self.faster_heuristics
            or self.find_prefix(string)
            or self.find_infix(string)
            or self.find_suffix(string)
            or " " in string
        ):
            pattern = tuple(t for t, _ in self._tokenize_affixes(string, False))
            if pattern:
                self._patterns.add(pattern)
                self._first_tokens.add(pattern[0])
                self._longest = max(self._longest, len(pattern))

    def __call__(self, string: str) -> list[str]:
        tokens = self._tokenize_affixes(string, True)
        tokens = self._apply_special_cases(tokens)
        return [t for t, _ in tokens]

    def find_prefix(self, string: str, lo: int = 0, hi: int | None = None) -> int:
        return self._prefix.find(string, lo, hi) if self._prefix is not None else 0

    def find_suffix(self, string: str, lo: int = 0, hi: int | None = None) -> int:
        return self._suffix.find(string, lo, hi) if self._suffix is not None else 0

    def find_infix(self, string: str) -> list[re.Match[str]]:
        if self.infix_finditer is None:
            return []
        return list(self.infix_finditer(string))

    # A token is [text, followed_by_space] (spaCy's TokenC.spacy), as a list so it can be updated.
    def _tokenize_affixes(self, string: str, with_special_cases: bool) -> list[list[Any]]:
        tokens: list[list[Any]] = []
        if not string:
            return tokens
        has_special = [False]
        i = 0
        start = 0
        in_ws = string[0].isspace()
        # Like str.split, except that a run of whitespace other than exactly one " " is a token.
        for uc in string:
            if uc.isspace() != in_ws:
                if start < i:
                    span = string[start:i]
                    if not self._try_specials_and_cache(
                        span, tokens, has_special, with_special_cases
                    ):
                        self._tokenize(tokens, span, has_special, with_special_cases)
                if uc == " ":
                    if tokens:
                        tokens[-1][1] = True
                    start = i + 1
                else:
                    start = i
                in_ws = not in_ws
            i += 1
        if start < i:
            span = string[start:]
            if not self._try_specials_and_cache(span, tokens, has_special, with_special_cases):
                self._tokenize(tokens, span, has_special, with_special_cases)
            if tokens:
                tokens[-1][1] = string[-1] == " " and not in_ws
        return tokens

    def _try_specials_and_cache(
        self, key: str, tokens: list[list[Any]], has_special: list[bool], with_special: bool
    ) -> bool:
        if with_special:
            special = self._specials.get(key)
            if special is not None:
                tokens.extend([t, False] for t in special)
                has_special[0] = True
                return True
        cached = self._cache.get(key)
        if cached is not None:
            tokens.extend([t, False] for t in cached)
            return True
        return False

    def _tokenize(
        self, tokens: list[list[Any]], span: str, has_special: list[bool], with_special: bool
    ) -> None:
        orig_size = len(tokens)
        prefixes: list[str] = []
        suffixes: list[str] = []
        rest = self._split_affixes(span, prefixes, suffixes, with_special)
        self._attach_tokens(tokens, rest, prefixes, suffixes, has_special, with_special)
        if len(self._cache) < self.max_cache_size:
            # spaCy's _save_cached: nothing once this text has hit a special case
            n = len(tokens) - orig_size
            if n > 0 and not has_special[0]:
                self._cache[span] = tuple(t for t, _ in tokens[orig_size:])

    def _split_affixes(
        self, string: str, prefixes: list[str], suffixes: list[str], with_special: bool
    ) -> str:
        # spaCy's loop, on the bounds [lo, hi) of what is left instead of on copies of it
        lo, hi = 0, len(string)
        last_size = 0
        prefix = suffix = ""
        longest = self._longest_special if with_special else -1

        def special(a: int, b: int) -> bool:
            return b - a <= longest and string[a:b] in self._specials

        while lo < hi and hi - lo != last_size:
            if self.token_match is not None and self.token_match(string[lo:hi]):
                break
            if special(lo, hi):
                break
            last_size = hi - lo
            pre_len = self.find_prefix(string, lo, hi)
            if pre_len != 0:
                prefix = string[lo : lo + pre_len]
                if lo + pre_len < hi and special(lo + pre_len, hi):
                    lo += pre_len
                    prefixes.append(prefix)
                    break
            suf_len = self.find_suffix(string, lo + pre_len, hi)
            if suf_len != 0:
                suffix = string[hi - suf_len : hi]
                if hi - suf_len > lo and special(lo, hi - suf_len):
                    hi -= suf_len
                    suffixes.append(suffix)
                    break
            if pre_len and suf_len and (pre_len + suf_len) <= hi - lo:
                lo += pre_len
                hi -= suf_len
                prefixes.append(prefix)
                suffixes.append(suffix)
            elif pre_len:
                lo += pre_len
                prefixes.append(prefix)
            elif suf_len:
                hi -= suf_len
                suffixes.append(suffix)
        return string[lo:hi]

    def _attach_tokens(
        self,
        tokens: list[list[Any]],
        string: str,
        prefixes: list[str],
        suffixes: list[str],
        has_special: list[bool],
        with_special: bool,
    ) -> None:
        tokens.extend([p, False] for p in prefixes)
        if string:
            if self._try_specials_and_cache(string, tokens, has_special, with_special):
                pass
            elif (self.token_match is not None and self.token_match(string)) or (
                self.url_match is not None and self.url_match(string)
            ):
                tokens.append([string, False])
            else:
                matches = self.find_infix(string)
                if not matches:
                    tokens.append([string, False])
                else:
                    start = 0
                    for match in matches:
                        infix_start, infix_end = match.start(), match.end()
                        if infix_start == 0:  # spaCy: `== start_before_infixes`, which is 0
                            continue
                        if infix_start != start:
                            tokens.append([string[start:infix_start], False])
                        if infix_start != infix_end:
                            tokens.append([string[infix_start:infix_end], False])
                        start = infix_end
                    if string[start:]:
                        tokens.append([string[start:], False])
        tokens.extend([s, False] for s in reversed(suffixes))

    def _apply_special_cases(self, tokens: list[list[Any]]) -> list[list[Any]]:
        # spaCy runs a PhraseMatcher (exact token sequences) for the special cases that hold
        # affixes or spaces, keeps the longest, leftmost non-clashing matches and replaces each
        # one whose text (with its inner spaces) is a special case by that special case's pieces.
        if not self._patterns:
            return tokens
        texts = [t for t, _ in tokens]
        n = len(texts)
        matches: list[tuple[int, int]] = []
        for s in range(n):
            if texts[s] not in self._first_tokens:
                continue
            for length in range(1, min(self._longest, n - s) + 1):
                if tuple(texts[s : s + length]) in self._patterns:
                    matches.append((s, s + length))
        if not matches:
            return tokens
        # _filter_special_spans: sorted by (length, -start), taken from the end; a span is kept
        # when neither its first nor its last token was seen, and every span marks its tokens.
        matches.sort(key=lambda m: (m[1] - m[0], -m[0]))
        seen: set[int] = set()
        kept: dict[int, tuple[int, int]] = {}
        for s, e in reversed(matches):
            if s not in seen and (e - 1) not in seen:
                kept[s] = (s, e)
            seen.update(range(s, e))
        out: list[list[Any]] = []
        i = 0
        while i < n:
            if i not in kept:
                out.append(tokens[i])
                i += 1
                continue
            s, e = kept[i]
            text = "".join(t + (" " if sp else "") for t, sp in tokens[s:e])
            if tokens[e - 1][1]:
                text = text[:-1]
            special = self._specials.get(text)
            if special is None:  # the matcher over-matched across spaces the rule lacks
                out.extend(tokens[s:e])
            else:
                out.extend([t, False] for t in special)
                out[-1][1] = tokens[e - 1][1]
            i = e
        return out


# --- what a tokenizer file may hold ------------------------------------------------------------

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


def _found(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:60]}{'…' if len(text) > 60 else ''}"


def spec_problems(spec: dict[str, Any]) -> list[str]:
    """What is wrong with a tokenizer file's shape or size, one line per problem (empty: fine).

    Checks types, the bounds above and that ids stay inside the vocabulary; names, options and
    patterns are checked where they are used.
    """
    problems: list[str] = []

    def field(key: str, typ: type | tuple[type, ...], where: dict[str, Any] = spec) -> Any:
        prefix = "" if where is spec else "tokenizer."
        if key not in where:
            problems.append(f"{prefix}{key}: missing")
            return None
        value = where[key]
        if not isinstance(value, typ) or (isinstance(value, bool) and typ is int):
            problems.append(
                f"{prefix}{key}: expected {getattr(typ, '__name__', typ)}, found {_found(value)}"
            )
            return None
        return value

    def count(key: str, value: Any, cap: int) -> bool:
        if value is not None and len(value) > cap:
            problems.append(f"{key}: {len(value):,} entries, more than the {cap:,} allowed")
            return False
        return value is not None

    def words(key: str, value: Any) -> None:
        bad = next(
            (i for i, w in enumerate(value) if not isinstance(w, str) or len(w) > MAX_WORD_CHARS),
            None,
        )
        if bad is not None:
            problems.append(
                f"{key}[{bad}]: expected a word of at most {MAX_WORD_CHARS:,} characters, "
                f"found {_found(value[bad])}"
            )

    for key in ("rules", "post_rules"):
        value = field(key, list) if key == "rules" or key in spec else None
        count(key, value, MAX_RULES)
    vocab = field("vocab", list)
    if count("vocab", vocab, MAX_VOCAB):
        words("vocab", vocab)
    n_vocab = len(vocab) if isinstance(vocab, list) else 0
    for key in ("unmapped_tokens", "special_tokens"):
        if key in spec:
            value = field(key, list)
            if count(key, value, MAX_VOCAB):
                words(key, value)
    aliases = spec.get("aliases")
    if aliases is not None and not isinstance(aliases, dict):
        problems.append(
            f"aliases must map words to ids inside the vocabulary, found {_found(aliases)}"
        )
    elif count("aliases", aliases, MAX_ALIASES) and vocab is not None:
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
            problems.append(
                f"aliases must map words to ids inside the vocabulary (0 to {n_vocab - 1}); "
                f"found {bad[0][:60]!r}: {_found(bad[1])}"
            )
    for key, default in (("unknown_id", 0), ("pad_id", 1)):
        value = spec.get(key, default)
        if (
            not isinstance(value, int)
            or isinstance(value, bool)
            or not 0 <= value < max(n_vocab, 1)
        ):
            problems.append(f"{key}: expected an id inside the vocabulary, found {_found(value)}")
    labels = field("labels", list)
    if count("labels", labels, MAX_LABELS):
        words("labels", labels)
    chunking = field("chunking", dict)
    if chunking is not None:
        bptt, max_len = chunking.get("bptt"), chunking.get("max_len")
        if not isinstance(bptt, int) or isinstance(bptt, bool) or not 1 <= bptt <= MAX_BPTT:
            problems.append(f"chunking.bptt: expected 1 to {MAX_BPTT:,}, found {_found(bptt)}")
        if max_len is not None and (
            not isinstance(max_len, int) or isinstance(max_len, bool) or max_len < 0
        ):
            problems.append(
                f"chunking.max_len: expected null or a count >= 0, found {_found(max_len)}"
            )
    tok = field("tokenizer", dict)
    if tok is not None:
        problems.extend(_spacy_problems(tok))
    return problems


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
                f"{MAX_PATTERN_CHARS:,} characters, found {_found(rx)}"
            )
        if not isinstance(flags, int) or isinstance(flags, bool) or flags & ~_PATTERN_FLAGS:
            problems.append(
                f"tokenizer.{slot}.flags: expected a combination of re.I, M, S, U, X, A "
                f"({int(_PATTERN_FLAGS)} at most), found {_found(flags)}"
            )
    if not isinstance(tok.get("faster_heuristics", True), bool):
        problems.append(
            f"tokenizer.faster_heuristics: expected true or false, found {_found(tok['faster_heuristics'])}"
        )
    size = tok.get("max_cache_size", 10000)
    if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= MAX_CACHE_SIZE:
        problems.append(
            f"tokenizer.max_cache_size: expected 0 to {MAX_CACHE_SIZE:,}, found {_found(size)}"
        )
    cases = tok.get("special_cases", {})
    if not isinstance(cases, dict):
        problems.append(f"tokenizer.special_cases: expected an object, found {_found(cases)}")
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
                    f"found {_found(pieces)}"
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


# --- the whole pipeline: rules -> spaCy -> ids --------------------------------------------------


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
        self._rules = [_rule(r, f"{source}: rules") for r in spec["rules"]]
        self._post_rules = [_rule(r, f"{source}: post_rules") for r in spec.get("post_rules", [])]
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
