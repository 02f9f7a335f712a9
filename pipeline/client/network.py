"""HTTP for the client: timeouts, one retry policy, resumable downloads, progress on a terminal.

httpx is imported on first use, so importing `pipeline.client` stays cheap. Every wait goes
through an injectable `sleep` and every deadline through an injectable `clock`, so the tests
check the exact waits without sleeping.
"""

from __future__ import annotations

import email.utils
import errno
import logging
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline import __version__
from pipeline.errors import ArtifactNotFound, IntegrityError, ReleaseError, RemoteError

log = logging.getLogger("pipeline.client")

CHUNK = 1 << 20
SMALL_FILE_LIMIT = 16 << 20  # manifests, signatures, `latest` pointers: never more than this
_RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


class Unreachable(RemoteError):
    """A source could not be reached or kept failing (connection, timeout, 5xx, 429)."""


class DiskFull(ReleaseError, OSError):
    """The cache directory has no room for a file. Nothing already cached is touched."""

    exit_code = 3


@dataclass(frozen=True)
class RetryPolicy:
    """How long to wait for a host and how often to try again.

    Attributes:
        attempts: tries per request; a download attempt that received bytes does not count,
            since the next one resumes where it stopped.
        backoff: the first wait in seconds; doubles on each retry, up to `backoff_max`,
            each multiplied by a random factor in [0.5, 1) (jitter, so N servers that failed
            together do not retry together).
        total: seconds one request (one file, all attempts and waits included) may take.
        connect_timeout, read_timeout: per connection attempt / per read of the body.
    """

    attempts: int = 6
    backoff: float = 0.5
    backoff_max: float = 30.0
    total: float = 900.0
    connect_timeout: float = 10.0
    read_timeout: float = 60.0

    def delay(self, retry: int, rand: float) -> float:
        """The wait before retry number `retry` (1-based), given a random number in [0, 1)."""
        return min(self.backoff_max, self.backoff * 2 ** (retry - 1)) * (0.5 + rand / 2)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class _Retry(Exception):
    """One failed attempt that may be retried."""

    def __init__(self, why: str, retry_after: float | None = None, progressed: bool = False):
        super().__init__(why)
        self.why = why
        self.retry_after = retry_after
        self.progressed = progressed


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


class Http:
    """An httpx client with the retry policy applied to every request.

    Args:
        policy: timeouts, attempts, backoff and the total time budget.
        sleep, clock, rand: injectable for tests (time.sleep, time.monotonic, random.random).
        progress: draw progress bars on stderr; None means only when stderr is a terminal.
        transport: an httpx transport (tests); None uses the default.
    """

    def __init__(
        self,
        policy: RetryPolicy | None = None,
        *,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        rand: Callable[[], float] = random.random,
        progress: bool | None = None,
        transport: Any = None,
    ):
        self.policy = policy or RetryPolicy()
        self.sleep, self.clock, self.rand = sleep, clock, rand
        self.progress = sys.stderr.isatty() if progress is None else progress
        self._transport = transport
        self._client: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:
            import httpx

            p = self.policy
            self._client = httpx.Client(
                timeout=httpx.Timeout(p.read_timeout, connect=p.connect_timeout),
                follow_redirects=True,
                headers={"User-Agent": f"fastai-release/{__version__}"},
                transport=self._transport,
            )
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def __enter__(self) -> Http:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the retry loop ------------------------------------------------------------------

    def _run(self, what: str, url: str, attempt: Callable[[], Any]) -> Any:
        """Call `attempt` until it returns, retrying `_Retry` within the policy's bounds."""
        p = self.policy
        start = self.clock()
        failures = 0
        tries = 0
        while True:
            tries += 1
            try:
                return attempt()
            except _Retry as e:
                if not e.progressed:
                    failures += 1
                elapsed = self.clock() - start
                if failures >= p.attempts:
                    raise Unreachable(
                        f"{what}: {_safe(url)}: gave up after {tries} attempts in {elapsed:.1f} s: {e.why}"
                    ) from None
                wait = p.delay(max(failures, 1), self.rand())
                if e.retry_after is not None:
                    if elapsed + e.retry_after > p.total:
                        raise Unreachable(
                            f"{what}: {_safe(url)}: the server asks to retry in {e.retry_after:.0f} s, "
                            f"beyond the {p.total:.0f} s budget ({e.why})"
                        ) from None
                    wait = max(wait, e.retry_after)
                if elapsed + wait > p.total:
                    raise Unreachable(
                        f"{what}: {_safe(url)}: gave up after {tries} attempts in {elapsed:.1f} s "
                        f"(budget {p.total:.0f} s): {e.why}"
                    ) from None
                log.warning(
                    "%s: %s; retry %d in %.1f s", what, e.why, tries, wait
                )  # the source and file are in `what`
                self.sleep(wait)

    def _check_status(self, response: Any, what: str, url: str) -> None:
        status = response.status_code
        if status < 400:
            return
        if status in _RETRY_STATUSES or status >= 500:
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            raise _Retry(f"HTTP {status}", retry_after)
        if status == 404:
            raise ArtifactNotFound(f"{what}: not found at {_safe(url)} (HTTP 404)")
        hint = "; check the token (it is sent only to its own host)" if status in (401, 403) else ""
        raise RemoteError(f"{what}: {_safe(url)} answered HTTP {status}{hint}")

    # -- requests ------------------------------------------------------------------------

    def get_bytes(
        self,
        url: str,
        *,
        what: str,
        headers: dict[str, str] | None = None,
        limit: int = SMALL_FILE_LIMIT,
    ) -> bytes:
        """The body of a small file.

        Raises:
            ArtifactNotFound: HTTP 404.
            Unreachable: connection failures, timeouts, 5xx or 429 beyond the retry policy.
            RemoteError: another HTTP error (401, 403, ...), or a body over `limit` bytes.
        """
        import httpx

        def attempt() -> bytes:
            try:
                with self.client.stream("GET", url, headers=headers) as r:
                    self._check_status(r, what, url)
                    body = bytearray()
                    for chunk in r.iter_bytes():
                        body += chunk
                        if len(body) > limit:
                            raise RemoteError(f"{what}: {_safe(url)}: more than {limit} bytes")
                    return bytes(body)
            except httpx.TransportError as e:
                raise _Retry(_describe(e)) from None

        return self._run(what, url, attempt)

    def get_json(self, url: str, *, what: str, headers: dict[str, str] | None = None) -> Any:
        """A small JSON document (see get_bytes).

        Raises:
            RemoteError: not JSON; and everything get_bytes raises.
        """
        import json

        body = self.get_bytes(url, what=what, headers=headers)
        try:
            return json.loads(body)
        except ValueError as e:
            raise RemoteError(f"{what}: {_safe(url)} did not answer JSON: {e}") from None

    def download(
        self,
        url: str,
        part: Path,
        *,
        size: int,
        what: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Bring `part` up to `size` bytes from `url`, resuming what it already holds.

        `part` may hold the beginning of the file from an earlier, interrupted run: the rest
        is asked for with an HTTP Range request (a server that ignores it sends everything,
        and the file starts over). Bytes are not verified here; the caller checks blake3.

        Raises:
            ArtifactNotFound: HTTP 404.
            IntegrityError: the server sends more bytes than the manifest says.
            DiskFull: no space left for the file.
            Unreachable / RemoteError: as get_bytes.
        """
        import httpx

        part = Path(part)
        bar = Progress(Path(url).name, size, self.progress)

        def attempt() -> None:
            have = part.stat().st_size if part.exists() else 0
            if have > size:
                part.unlink()
                have = 0
            if have == size:
                return
            h = {"Accept-Encoding": "identity", **(headers or {})}
            if have:
                h["Range"] = f"bytes={have}-"
            got = 0
            try:
                with self.client.stream("GET", url, headers=h) as r:
                    if r.status_code == 416:  # our partial file is not a prefix of theirs
                        part.unlink(missing_ok=True)
                        raise _Retry("HTTP 416 for the resumed range; starting over")
                    self._check_status(r, what, url)
                    mode = "ab"
                    if have and r.status_code != 206:
                        log.info("%s: the server ignored the Range request; starting over", what)
                        mode, have = "wb", 0
                    elif have and not r.headers.get("Content-Range", "").startswith(
                        f"bytes {have}-"
                    ):
                        part.unlink(missing_ok=True)
                        raise _Retry(
                            f"Content-Range {r.headers.get('Content-Range')!r} does not start at {have}"
                        )
                    elif have:
                        log.info("%s: resuming at byte %d of %d", what, have, size)
                    with _open_for_write(part, mode, what) as f:
                        for chunk in r.iter_bytes():  # as it arrives: an error loses nothing
                            if have + got + len(chunk) > size:
                                raise IntegrityError(
                                    f"{what}: {_safe(url)} sends more than the {size} bytes the manifest says"
                                )
                            _write(f, chunk, part, what)
                            got += len(chunk)
                            bar.update(have + got)
                            if self.clock() - start > self.policy.total:
                                raise Unreachable(
                                    f"{what}: {_safe(url)}: not finished within {self.policy.total:.0f} s "
                                    f"({have + got} of {size} bytes)"
                                )
            except httpx.TransportError as e:
                raise _Retry(
                    f"{_describe(e)} after {have + got} of {size} bytes", progressed=got > 0
                ) from None
            if have + got < size:
                raise _Retry(
                    f"the body ended after {have + got} of {size} bytes", progressed=got > 0
                )

        start = self.clock()
        try:
            self._run(what, url, attempt)
        finally:
            bar.close()


def _open_for_write(part: Path, mode: str, what: str) -> Any:
    try:
        return open(part, mode)  # noqa: SIM115 (closed by the caller's with)
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


def _describe(e: Exception) -> str:
    text = str(e) or type(e).__name__
    return f"{type(e).__name__}: {text}"


def _safe(url: str) -> str:
    """The URL without a query string or user info (never print a token)."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
