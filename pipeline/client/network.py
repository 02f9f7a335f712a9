"""HTTP for the client: timeouts, the one retry policy, resumable downloads, progress on a terminal.

Every request is bounded three ways (see `RetryPolicy`): `timeout` without a byte, `min_rate`
bytes per second over `rate_window` seconds (a transfer slower than that is dropped and resumed),
and `max_total` seconds for the whole request, attempts and waits included. The last is a
deadline inside every read: a watchdog shuts the connection's socket down when it passes, so a
server that trickles a byte at a time, in the headers or the body, cannot hold a fetch longer.
Every failure becomes a typed error the fetch loop knows (the next source is then tried):
`Unreachable` (connection, timeout, 5xx/429 after the retries, too slow), `BadResponse` (a
redirect loop, an undecodable body, a malformed answer), `ArtifactNotFound` (404), `RemoteError`.
Credentials in a URL (`https://user:token@host/`) are moved into an Authorization header before
the request is made or logged, so neither httpx's log nor ours ever shows them.

httpx is imported on first use, so importing `pipeline.client` stays cheap. Every wait goes
through an injectable `sleep` and every deadline through an injectable `clock`, so the tests
check the exact waits without sleeping.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from pipeline import __version__
from pipeline.errors import ArtifactNotFound, IntegrityError, ReleaseError, RemoteError
from pipeline.retry import Retry, RetryPolicy, classify_status, parse_retry_after

__all__ = [
    "BadResponse",
    "CacheError",
    "DiskFull",
    "Http",
    "Progress",
    "RetryPolicy",
    "Unreachable",
    "parse_retry_after",
    "split_credentials",
]

log = logging.getLogger("pipeline.client")

CHUNK = 1 << 20
SMALL_FILE_LIMIT = 16 << 20  # manifests, signatures, `latest` pointers: never more than this


class Unreachable(RemoteError):
    """A source could not be reached, kept failing (connection, timeout, 5xx, 429), or was too
    slow (under the minimum rate, or past the request's deadline)."""


class BadResponse(RemoteError):
    """A source answered, but not with a usable HTTP response: a redirect loop, a body that does
    not decode, a malformed message."""


class CacheError(ReleaseError, OSError):
    """The cache directory cannot be used: not writable, gone, another file system error (the
    message names the path and the operation). Nothing already cached is changed."""

    exit_code = 3


class DiskFull(CacheError):
    """The cache directory has no room for a file. Nothing already cached is touched."""


class _Attempt(Exception):
    """One failed attempt that may be retried (carries the policy's `Retry`)."""

    def __init__(self, why: str, wait: float | None = None, progressed: bool = False):
        super().__init__(why)
        self.decision = Retry(why, wait, progressed)


def _classify(e: BaseException) -> Retry | None:
    return e.decision if isinstance(e, _Attempt) else None


def split_credentials(url: str) -> tuple[str, tuple[str, str] | None]:
    """`url` without its user info, and the (user, password) it held (percent-decoded), if any."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url, None
    netloc = parts.hostname or ""
    if ":" in netloc:  # an IPv6 literal
        netloc = f"[{netloc}]"
    if parts.port:
        netloc += f":{parts.port}"
    bare = urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    return bare, (unquote(parts.username or ""), unquote(parts.password or ""))


class _Deadline:
    """Shuts down the sockets of one request when its deadline passes (a `threading.Timer`), so
    that a read blocked on a trickling server returns. httpcore reports each new connection's
    stream through the request's `trace` extension; connections are not kept alive between
    requests, so every request's connection is a new one and is seen here."""

    def __init__(self, seconds: float):
        self.fired = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(max(0.0, seconds), self._fire)
        self._timer.daemon = True
        self._timer.start()

    def trace(self, event: str, info: dict[str, Any]) -> None:
        if event not in ("connection.connect_tcp.complete", "connection.start_tls.complete"):
            return
        stream = info.get("return_value")
        sock = stream.get_extra_info("socket") if stream is not None else None
        if sock is None:
            return
        with self._lock:
            self._sockets.append(sock)
            fired = self.fired
        if fired:
            _shutdown(sock)

    def _fire(self) -> None:
        with self._lock:
            self.fired = True
            sockets = list(self._sockets)
        for sock in sockets:
            _shutdown(sock)

    def cancel(self) -> None:
        self._timer.cancel()


def _shutdown(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


class _Rate:
    """Raises `_Attempt` when fewer than `min_rate` bytes per second arrived over the last
    `window` seconds (checked as bytes arrive; silence is the read timeout's business)."""

    def __init__(self, policy: RetryPolicy, clock: Callable[[], float]):
        self.min_rate, self.window, self.clock = policy.min_rate, policy.rate_window, clock
        self.mark_time, self.mark_bytes = clock(), 0

    def update(self, total: int, progressed: bool) -> None:
        if self.min_rate <= 0:
            return
        now = self.clock()
        span = now - self.mark_time
        if span < self.window:
            return
        rate = (total - self.mark_bytes) / span
        if rate < self.min_rate:
            raise _Attempt(
                f"too slow: {rate:.0f} bytes/s over {span:.0f} s, under the minimum of "
                f"{self.min_rate:.0f} bytes/s",
                progressed=progressed,
            )
        self.mark_time, self.mark_bytes = now, total


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
    """An httpx client with the retry policy and the bounds above applied to every request.

    Args:
        policy: attempts, backoff, the time budget, timeouts, the minimum rate
            (default `RetryPolicy.for_downloads()`).
        sleep, clock, rand: injectable for tests; override the policy's own.
        progress: draw progress bars on stderr; None means only when stderr is a terminal.
        transport: an httpx transport (tests); None uses the default.
    """

    def __init__(
        self,
        policy: RetryPolicy | None = None,
        *,
        sleep: Callable[[float], None] | None = None,
        clock: Callable[[], float] | None = None,
        rand: Callable[[], float] | None = None,
        progress: bool | None = None,
        transport: Any = None,
    ):
        self.policy = (policy or RetryPolicy.for_downloads()).with_clock(sleep, clock, rand)
        self.progress = sys.stderr.isatty() if progress is None else progress
        self._transport = transport
        self._client: Any = None

    @property
    def clock(self) -> Callable[[], float]:
        return self.policy.clock

    @property
    def client(self) -> Any:
        if self._client is None:
            import httpx

            p = self.policy
            self._client = httpx.Client(
                timeout=httpx.Timeout(p.timeout, connect=p.connect_timeout),
                follow_redirects=True,
                max_redirects=10,
                headers={"User-Agent": f"fastai-release/{__version__}"},
                # a new connection per request, so the deadline's watchdog sees its socket
                limits=httpx.Limits(max_keepalive_connections=0),
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

    # -- one request -----------------------------------------------------------------------

    def _run(self, what: str, attempt: Callable[[float], Any]) -> Any:
        """`attempt(deadline)` under the retry policy; `deadline` is on the policy's clock."""
        deadline = self.clock() + self.policy.max_total
        return self.policy.run(
            lambda: attempt(deadline), what=what, classify=_classify, error=Unreachable
        )

    @contextlib.contextmanager
    def _stream(
        self, url: str, headers: dict[str, str] | None, what: str, deadline: float
    ) -> Iterator[tuple[Any, Callable[[], None]]]:
        """An open streamed response, and a check to call as bytes arrive (deadline, rate).

        Every failure of httpx becomes a typed error: transport failures and timeouts are
        retried (`_Attempt`), the deadline is final (`Unreachable`), anything else httpx
        raises is `BadResponse`.
        """
        import httpx

        bare, credentials = split_credentials(url)
        left = deadline - self.clock()
        if left <= 0:
            raise Unreachable(
                f"{what}: {_safe(url)}: not finished within {self.policy.max_total:.0f} s"
            )
        p = self.policy
        watchdog = _Deadline(left)
        timeout = httpx.Timeout(min(p.timeout, left), connect=min(p.connect_timeout, left))

        def check() -> None:
            if watchdog.fired or self.clock() > deadline:
                raise Unreachable(
                    f"{what}: {_safe(url)}: not finished within {p.max_total:.0f} s "
                    "(the server is too slow); try again later or raise --timeout"
                )

        try:
            with self.client.stream(
                "GET",
                bare,
                headers=headers,
                auth=httpx.BasicAuth(*credentials) if credentials else None,
                timeout=timeout,
                extensions={"trace": watchdog.trace},
            ) as r:
                yield r, check
        except httpx.TransportError as e:  # connection, timeout, protocol: worth another try
            check()
            raise _Attempt(_describe(e)) from None
        except httpx.TooManyRedirects:
            raise BadResponse(
                f"{what}: {_safe(url)}: too many redirects (a redirect loop?)"
            ) from None
        except httpx.DecodingError as e:
            raise BadResponse(f"{what}: {_safe(url)}: the body does not decode: {e}") from None
        except (httpx.HTTPError, httpx.InvalidURL, httpx.StreamError) as e:
            raise BadResponse(f"{what}: {_safe(url)}: {_describe(e)}") from None
        finally:
            watchdog.cancel()

    def _check_status(self, response: Any, what: str, url: str) -> None:
        status = response.status_code
        if status < 400:
            return
        decision = classify_status(status, response.headers, now=self.policy.wall)
        if decision is not None:
            raise _Attempt(decision.reason, decision.wait)
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
            Unreachable: connection failures, timeouts, 5xx or 429 beyond the retry policy; a
                server slower than the policy's minimum rate or deadline.
            BadResponse: a redirect loop, an undecodable or malformed answer.
            RemoteError: another HTTP error (401, 403, ...), or a body over `limit` bytes.
        """

        def attempt(deadline: float) -> bytes:
            with self._stream(url, headers, what, deadline) as (r, check):
                self._check_status(r, what, url)
                rate = _Rate(self.policy, self.clock)
                body = bytearray()
                for chunk in r.iter_bytes():
                    body += chunk
                    if len(body) > limit:
                        raise RemoteError(f"{what}: {_safe(url)}: more than {limit} bytes")
                    check()
                    rate.update(len(body), False)
                return bytes(body)

        return self._run(what, attempt)

    def get_json(self, url: str, *, what: str, headers: dict[str, str] | None = None) -> Any:
        """A small JSON document (see get_bytes).

        Raises:
            BadResponse: not JSON; and everything get_bytes raises.
        """
        import json

        body = self.get_bytes(url, what=what, headers=headers)
        try:
            return json.loads(body)
        except (ValueError, RecursionError) as e:
            raise BadResponse(f"{what}: {_safe(url)} did not answer JSON: {e}") from None

    def get_if_changed(
        self,
        url: str,
        *,
        what: str,
        etag: str | None = None,
        last_modified: str | None = None,
        headers: dict[str, str] | None = None,
        limit: int = SMALL_FILE_LIMIT,
    ) -> tuple[bytes | None, str | None, str | None]:
        """A small file unless unchanged: (the body, or None when the server answered 304 Not
        Modified to If-None-Match `etag` / If-Modified-Since `last_modified`; its ETag; its
        Last-Modified). What polls a model index (pipeline/client/index.py) uses.

        Raises:
            As get_bytes.
        """
        h = {**(headers or {})}
        if etag:
            h["If-None-Match"] = etag
        elif last_modified:
            h["If-Modified-Since"] = last_modified

        def attempt(deadline: float) -> tuple[bytes | None, str | None, str | None]:
            with self._stream(url, h, what, deadline) as (r, check):
                if r.status_code == 304:
                    return None, etag, last_modified
                self._check_status(r, what, url)
                rate = _Rate(self.policy, self.clock)
                body = bytearray()
                for chunk in r.iter_bytes():
                    body += chunk
                    if len(body) > limit:
                        raise RemoteError(f"{what}: {_safe(url)}: more than {limit} bytes")
                    check()
                    rate.update(len(body), False)
                return bytes(body), r.headers.get("ETag"), r.headers.get("Last-Modified")

        return self._run(what, attempt)

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
            Unreachable / BadResponse / RemoteError: as get_bytes.
        """
        part = Path(part)
        bar = Progress(Path(urlsplit(url).path).name, size, self.progress)

        def attempt(deadline: float) -> None:
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
                with self._stream(url, h, what, deadline) as (r, check):
                    if r.status_code == 416:  # our partial file is not a prefix of theirs
                        part.unlink(missing_ok=True)
                        raise _Attempt("HTTP 416 for the resumed range; starting over")
                    self._check_status(r, what, url)
                    mode = "ab"
                    if have and r.status_code != 206:
                        log.info("%s: the server ignored the Range request; starting over", what)
                        mode, have = "wb", 0
                    elif have and not r.headers.get("Content-Range", "").startswith(
                        f"bytes {have}-"
                    ):
                        part.unlink(missing_ok=True)
                        raise _Attempt(
                            f"Content-Range {r.headers.get('Content-Range')!r} does not start at {have}"
                        )
                    elif have:
                        log.info("%s: resuming at byte %d of %d", what, have, size)
                    rate = _Rate(self.policy, self.clock)
                    with _open_for_write(part, mode, what) as f:
                        for chunk in r.iter_bytes():  # as it arrives: an error loses nothing
                            if have + got + len(chunk) > size:
                                raise IntegrityError(
                                    f"{what}: {_safe(url)} sends more than the {size} bytes the manifest says"
                                )
                            _write(f, chunk, part, what)
                            got += len(chunk)
                            bar.update(have + got)
                            check()
                            rate.update(got, got > 0)
            except _Attempt as e:
                if got and not e.decision.progressed:
                    raise _Attempt(
                        f"{e.decision.reason} after {have + got} of {size} bytes",
                        e.decision.wait,
                        progressed=True,
                    ) from None
                raise
            if have + got < size:
                raise _Attempt(
                    f"the body ended after {have + got} of {size} bytes", progressed=got > 0
                )

        try:
            self._run(what, attempt)
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


class _RedactUrls(logging.Filter):
    """Strip query strings and user info from the URLs in HTTP libraries' request log lines.

    httpx logs every request's full URL at INFO ("HTTP Request: GET https://..."): with logging
    configured at INFO, a token in a source's query string, or the signed query of the storage URL
    that GitHub and the Hub redirect downloads to, would end up in the server's logs. urllib3 (under
    PyGithub's requests and boto3) logs the request path with its query at DEBUG
    ('https://host:443 "GET /path?X-Amz-Signature=... HTTP/1.1" 200 ...'), and the redirects it
    follows itself at INFO ("Redirecting https://... -> https://...").
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(_redacted(a) for a in record.args)
        return True


def _redacted(arg: Any) -> Any:
    text = str(arg) if type(arg).__name__ == "URL" else arg
    if isinstance(text, str) and text.startswith(("http://", "https://")):
        from urllib.parse import urlsplit

        parts = urlsplit(text)
        if parts.query or parts.username or parts.password:
            return _safe(text) + ("?<redacted>" if parts.query else "")
    elif isinstance(text, str) and text.startswith("/") and "?" in text:  # urllib3: a path
        return text.split("?", 1)[0] + "?<redacted>"
    return arg


_REDACT = _RedactUrls()


def redact_request_logs() -> None:
    """Install the URL redaction on httpx's and urllib3's request loggers (idempotent). Done when
    this module is imported, so it also covers huggingface_hub's downloads (httpx too) in a process
    that uses the client; the publishers call it before they download."""
    for name in (
        "httpx",
        "urllib3.connectionpool",  # request lines
        "urllib3.poolmanager",  # redirects it follows
        "urllib3.util.retry",  # "Incremented Retry for (url=...)"
    ):
        logger = logging.getLogger(name)
        if _REDACT not in logger.filters:
            logger.addFilter(_REDACT)


redact_request_logs()


def _safe(url: str) -> str:
    """The URL without a query string or user info (never print a token)."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
