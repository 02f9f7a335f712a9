"""spaCy's tokenizer algorithm over exported patterns and special cases, in linear time.

spaCy's tokenizer is regex-driven: prefix, suffix and infix patterns, a URL matcher and a table of
special cases, applied by a fixed algorithm (`spacy/tokenizer.pyx`: `_tokenize_affixes`,
`_split_affixes`, `_attach_tokens`, then `_apply_special_cases` over the special cases that
contain affixes or a space). The build exports the learner's own patterns and special cases into
`tokenizer.json`; `SpacyRules` runs the same algorithm on them with Python's `re`, which is what
spaCy itself calls, with the affix searches bounded (`_Affix`) so a hostile text costs linear time.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pipeline.errors import InputError


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
