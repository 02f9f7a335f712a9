"""fastai's text rules, for servers without fastai: the functions `Tokenizer` applies to a text
before spaCy splits it, copied from fastai 2.8.12 (`fastai/text/core.py`, Apache-2.0), and the
reading of a tokenizer file's `rules` list into them (`rule_from_spec`).
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from typing import Any

from pipeline.client.tokenizer_format import found
from pipeline.errors import InputError

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


def rule_from_spec(spec: Any, where: str) -> Callable[[str], str]:
    """The rule a tokenizer file names (`"lowercase"` or `{name, kwargs}`), ready to apply.

    Raises:
        InputError: not a rule this client knows, or options it does not take.
    """
    if isinstance(spec, str):
        name, kwargs = spec, {}
    elif isinstance(spec, dict):
        name, kwargs = spec.get("name"), spec.get("kwargs")
    else:
        raise InputError(f"{where}: a rule is a name or {{name, kwargs}}, found {found(spec)}")
    if not isinstance(name, str) or name not in RULES:
        raise InputError(
            f"{where}: unknown text rule {str(name)[:60]!r}; this client knows {', '.join(RULES)} "
            "(a newer fastai-release may know more)"
        )
    kwargs = kwargs or {}
    if not isinstance(kwargs, dict):
        raise InputError(f"{where}: rule {name!r}: kwargs must be an object, found {found(kwargs)}")
    bad = set(kwargs) - RULE_OPTIONS.get(name, frozenset())
    if bad:
        raise InputError(f"{where}: rule {name!r} takes no option {', '.join(sorted(bad))[:200]}")
    if not all(isinstance(v, bool) for v in kwargs.values()):
        raise InputError(f"{where}: rule {name!r}: options are true or false, found {kwargs!r}")
    fn = RULES[name]
    return (lambda t: fn(t, **kwargs)) if kwargs else fn
