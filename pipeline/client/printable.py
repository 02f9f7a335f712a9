"""Text that came from a source, made safe to print: escaped and cut short.

A source is not trusted until its manifest is, and even then a version name, a tag, a key or a
server's error text reaches a terminal or a log line through `release list`, `release fetch` and
the client's messages. `printable()` escapes every character a terminal could act on (C0 and C1
controls, DEL, and the invisible format characters that reorder text: bidi overrides, zero-width
joiners) and caps the length, saying how much was left out.
"""

from __future__ import annotations

import unicodedata

DEFAULT_LIMIT = 200
_KEEP = frozenset(" ")


def _escape(ch: str) -> str:
    code = ord(ch)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def _unsafe(ch: str) -> bool:
    if ch in _KEEP:
        return False
    # Cc: controls (ESC, CSI, BEL, ...); Cf: format (bidi overrides, zero width); Cs: lone
    # surrogates; Co/Cn: private and unassigned; Zl/Zp: line and paragraph separators.
    return ch == "\\" or unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp")


def printable(text: object, limit: int = DEFAULT_LIMIT) -> str:
    """`text` with every control or invisible character escaped (`\\x1b`, `\\u202e`; a backslash
    doubled, so an escape cannot be forged), cut to about `limit` characters.

    Bytes are decoded as UTF-8 (an undecodable byte becomes U+FFFD).
    """
    if isinstance(text, bytes | bytearray):
        text = bytes(text[: limit * 4 + 4]).decode("utf-8", "replace")
    s = str(text)
    out: list[str] = []
    used = 0
    for i, ch in enumerate(s):
        piece = ("\\\\" if ch == "\\" else _escape(ch)) if _unsafe(ch) else ch
        if used + len(piece) > limit:
            return "".join(out) + f"…({len(s) - i} more characters)"
        out.append(piece)
        used += len(piece)
    return "".join(out)
