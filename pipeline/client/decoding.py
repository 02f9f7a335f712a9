"""A body decoded with a bound: at most one content coding, never more bytes than there is room.

Every body is bounded in size *after decoding*: a small file (`Http.get_bytes`) by its limit, a
model file (`Http.download`) by the manifest's size. The client decodes the body itself, step by
step with a bounded output per step, and accepts at most one content coding (gzip or deflate): a
stacked `Content-Encoding: gzip, gzip` is refused before a byte is inflated.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from typing import Any

from pipeline.client.errors import BadResponse
from pipeline.client.printable import printable
from pipeline.redaction import safe_url

CHUNK = 1 << 20
_WBITS = {"gzip": 31, "x-gzip": 31, "deflate": 15}  # the codings decoded (one at most)


class Decoder:
    """Decodes a body with at most one content coding (gzip or deflate), never producing more
    than the caller still has room for, plus one byte (so the caller sees the overflow and
    refuses it): a gzip bomb is stopped at the limit, not after inflating to memory."""

    def __init__(self, header: str, what: str, url: str):
        self.what, self.url = what, url
        codings = [c.strip().lower() for c in header.split(",")]
        codings = [c for c in codings if c and c != "identity"]
        if len(codings) > 1:
            raise BadResponse(
                f"{what}: {safe_url(url)}: Content-Encoding '{printable(header, 80)}': "
                f"{len(codings)} stacked encodings; refusing the body (at most one of "
                "gzip or deflate is decoded)"
            )
        if codings and codings[0] not in _WBITS:
            raise BadResponse(
                f"{what}: {safe_url(url)}: Content-Encoding '{printable(codings[0], 40)}' is not "
                "one this client decodes (gzip, deflate); refusing the body"
            )
        self.coding = codings[0] if codings else None
        self._wbits = _WBITS.get(self.coding or "", 0)
        self._z = zlib.decompressobj(self._wbits) if self.coding else None
        self._fed = False

    @property
    def identity(self) -> bool:
        return self._z is None

    def feed(self, data: bytes, room: int) -> Iterator[bytes]:
        """The decoded bytes of `data`; at most `room` + 1 of them in all."""
        if self._z is None:
            yield data
            return
        first, self._fed = not self._fed, True
        try:
            yield from self._inflate(data, room)
        except zlib.error as e:
            if first and self.coding == "deflate" and self._wbits > 0:  # raw deflate, no header
                self._wbits = -15
                self._z = zlib.decompressobj(self._wbits)
                yield from self.feed(data, room)
                return
            raise BadResponse(
                f"{self.what}: {safe_url(self.url)}: the body does not decode ({self.coding}): {e}"
            ) from None

    def _inflate(self, data: bytes, room: int) -> Iterator[bytes]:
        assert self._z is not None
        while True:
            step = max(1, min(CHUNK, room + 1))
            out = self._z.decompress(data, step)
            data = self._z.unconsumed_tail
            if out:
                yield out
                room -= len(out)
                if room < 0:
                    return
            if self._z.eof:
                rest = self._z.unused_data + data
                if not rest.strip(b"\0"):  # padding after the stream
                    return
                self._z = zlib.decompressobj(self._wbits)  # a second gzip member
                data = rest
                continue
            if not data and len(out) < step:
                return

    def finish(self) -> None:
        """Raises: BadResponse: the body ended inside its compressed stream."""
        if self._z is not None and self._fed and not self._z.eof:
            raise BadResponse(
                f"{self.what}: {safe_url(self.url)}: the body does not decode ({self.coding}): it "
                "ends inside the compressed stream"
            )


def content_length(response: Any) -> int | None:
    """The response's Content-Length when it is a plain number, else None."""
    value = response.headers.get("Content-Length", "").strip()
    return int(value) if value.isdigit() else None
