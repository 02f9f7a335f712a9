"""One resumable download into a part file, and its progress bar (see `Http.download`).

Each attempt resumes from what the part file holds (an HTTP Range request); the body is decoded
with the bound of `decoding.py` and written as it arrives, so an error loses nothing; the file
never grows past the manifest's size; a full disk deletes the part file (`DiskFull`) and leaves
the rest of the cache untouched. Nothing is verified here: the cache checks blake3.
"""

from __future__ import annotations

import errno
import logging
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline import atomic
from pipeline.client.deadlines import Rate, Until
from pipeline.client.decoding import Decoder, content_length
from pipeline.client.errors import Attempt, DiskFull
from pipeline.client.printable import printable
from pipeline.errors import IntegrityError
from pipeline.redaction import safe_url

if TYPE_CHECKING:
    from pipeline.client.network import Http

log = logging.getLogger("pipeline.client")


class Progress:
    """A one-line progress bar on stderr; does nothing unless enabled (stderr is a terminal)."""

    def __init__(self, name: str, total: int, enabled: bool, stream: Any = None):
        self.name, self.total, self.enabled = name, total, enabled
        self.stream = stream or sys.stderr
        self._last = 0.0

    def update(self, done: int) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._last < 0.1 and done < self.total:
            return
        self._last = now
        pct = 100 * done / self.total if self.total else 100.0
        bar = "#" * int(pct / 5)
        self.stream.write(
            f"\r{self.name:<24.24} [{bar:<20}] {done / 1e6:8.1f}/{self.total / 1e6:.1f} MB {pct:5.1f}%"
        )
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()


class Download:
    """One download's attempts: each resumes from what `part` holds (see `Http.download`)."""

    def __init__(
        self,
        http: Http,
        url: str,
        part: Path,
        size: int,
        what: str,
        headers: dict[str, str],
        redirect_hosts: Sequence[str],
        bar: Progress,
    ):
        self.http, self.url, self.part, self.size, self.what = http, url, part, size, what
        self.headers, self.redirect_hosts, self.bar = headers, redirect_hosts, bar
        self.got = 0

    def attempt(self, until: Until) -> None:
        part, size = self.part, self.size
        have = part.stat().st_size if part.exists() else 0
        if have > size:
            part.unlink()
            have = 0
        if have == size:
            return
        h = {"Accept-Encoding": "identity", **self.headers}
        if have:
            h["Range"] = f"bytes={have}-"
        self.got = 0  # bytes written by this attempt
        try:
            with self.http.stream(self.url, h, self.what, until, self.redirect_hosts) as (
                r,
                check,
            ):
                mode, have = self._resume_mode(r, have)
                self._write_body(r, check, mode, have)
        except Attempt as e:
            if self.got and not e.decision.progressed:
                raise Attempt(
                    f"{e.decision.reason} after {have + self.got} of {size} bytes",
                    e.decision.wait,
                    progressed=True,
                ) from None
            raise
        if have + self.got < size:
            raise Attempt(
                f"the body ended after {have + self.got} of {size} bytes", progressed=self.got > 0
            )

    def _resume_mode(self, r: Any, have: int) -> tuple[str, int]:
        """How to open `part` for this response ("ab" to append, "wb" to start over), and the
        bytes kept.

        Raises:
            Attempt: the server refused the range or answered another one (the part file is
                deleted: it is not a prefix of the server's file).
        """
        what = self.what
        if r.status_code == 416:  # our partial file is not a prefix of theirs
            self.part.unlink(missing_ok=True)
            raise Attempt("HTTP 416 for the resumed range; starting over")
        self.http.check_status(r, what, self.url)
        if have and r.status_code != 206:
            log.info("%s: the server ignored the Range request; starting over", what)
            return "wb", 0
        if have and not r.headers.get("Content-Range", "").startswith(f"bytes {have}-"):
            self.part.unlink(missing_ok=True)
            raise Attempt(
                f"Content-Range '{printable(r.headers.get('Content-Range'), 80)}' "
                f"does not start at {have}"
            )
        if have:
            log.info("%s: resuming at byte %d of %d", what, have, self.size)
        return "ab", have

    def _write_body(self, r: Any, check: Callable[[], None], mode: str, have: int) -> None:
        """Append the decoded body to `part` as it arrives (an error loses nothing), counting
        the bytes written in `self.got`.

        Raises:
            IntegrityError: more bytes than the manifest says (announced or sent).
            DiskFull: no space left.
            Attempt: too slow.
        """
        size, what = self.size, self.what
        decoder = Decoder(r.headers.get("Content-Encoding", ""), what, self.url)
        declared = content_length(r)
        too_many = (
            f"{what}: {safe_url(self.url)} sends more than the {size} bytes the manifest says"
        )
        if decoder.identity and declared is not None and have + declared > size:
            raise IntegrityError(
                f"{too_many} ({declared} announced from byte {have}); not downloaded"
            )
        rate = Rate(self.http.policy, self.http.clock)
        received = 0
        with _open_for_write(self.part, mode, what) as f:
            for chunk in r.iter_raw():
                received += len(chunk)
                for piece in decoder.feed(chunk, size - have - self.got):
                    if have + self.got + len(piece) > size:
                        raise IntegrityError(too_many)
                    _write(f, piece, self.part, what)
                    self.got += len(piece)
                self.bar.update(have + self.got)
                check()
                rate.update(received, self.got > 0)
        decoder.finish()


def _open_for_write(part: Path, mode: str, what: str) -> Any:
    try:
        return atomic.open_unshared(part, mode)  # the cache: never through a planted link
    except OSError as e:
        raise _disk_error(e, part, what) from e


def _write(f: Any, chunk: bytes, part: Path, what: str) -> None:
    try:
        f.write(chunk)
    except OSError as e:
        raise _disk_error(e, part, what) from e


def _disk_error(e: OSError, part: Path, what: str) -> Exception:
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        part.unlink(missing_ok=True)  # free what we took; the cached files are untouched
        return DiskFull(
            f"{what}: no space left in {part.parent.parent} while writing the download; "
            "the partial file was deleted and nothing else in the cache was changed: free space, "
            "or point RELEASE_CACHE_DIR / --cache-dir at a larger disk"
        )
    return e
