"""HTTP for the client: `Http`, the one transport of every remote source, with the one retry
policy, resumable downloads, progress on a terminal, and one set of bounds for every byte a source
sends.

The bounds live in their own modules, each a part of every request made here: time
(`deadlines.py`: a deadline inside every read, a minimum rate, a budget per source per fetch),
size (`decoding.py`: bodies decoded by the client itself, bounded per step, one coding at most),
place (`redirects.py`: redirects followed by hand, each hop checked, no credential across
origins). Every failure becomes a typed error the fetch loop knows (`errors.py`; the next source
is then tried): `Unreachable` (connection, timeout, 5xx/429 after the retries, too slow, a
deadline), `BadResponse` (a refused redirect, an undecodable or oversized body, a malformed
answer), `ArtifactNotFound` (404), `HttpStatus` (another final HTTP status). Credentials in a URL
are moved into an Authorization header before the request is made or logged, and making an `Http`
installs the redaction of query strings and user info on httpx's and urllib3's loggers
(`pipeline/redaction.py`), so neither their log nor ours ever shows a token.

httpx is imported on first use, so importing `pipeline.client` stays cheap; importing this module
changes no logger. Every wait goes through an injectable `sleep`, every deadline through an
injectable `clock` and every name lookup through an injectable `resolve`, so the tests check the
exact waits without sleeping.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pipeline import __version__
from pipeline.client.deadlines import (
    DEFAULT_SOURCE_DEADLINE,
    SOURCE_DEADLINE_ENV,
    Rate,
    Until,
    Watchdog,
    source_deadlines,
    until,
)
from pipeline.client.decoding import Decoder, content_length
from pipeline.client.download import Download, Progress
from pipeline.client.errors import (
    Attempt,
    BadResponse,
    CacheError,
    DiskFull,
    HttpStatus,
    Refused,
    Unreachable,
    classify_attempt,
)
from pipeline.client.printable import printable
from pipeline.client.redirects import (
    CARRIED,
    MAX_REDIRECTS,
    REDIRECT_HOSTS_ENV,
    REDIRECT_STATUSES,
    HostPattern,
    Redirects,
    address_class,
    default_resolve,
    host_patterns,
    origin,
    split_credentials,
)
from pipeline.errors import ArtifactNotFound
from pipeline.redaction import redact_request_logs, safe_url
from pipeline.retry import RetryPolicy, classify_status, parse_retry_after

__all__ = [  # what the client's users and tests import from here (the names' homes: above)
    "DEFAULT_SOURCE_DEADLINE",
    "REDIRECT_HOSTS_ENV",
    "SOURCE_DEADLINE_ENV",
    "BadResponse",
    "CacheError",
    "DiskFull",
    "HostPattern",
    "Http",
    "HttpStatus",
    "Progress",
    "RetryPolicy",
    "Unreachable",
    "address_class",
    "host_patterns",
    "parse_retry_after",
    "source_deadlines",
    "split_credentials",
]

log = logging.getLogger("pipeline.client")

SMALL_FILE_LIMIT = 16 << 20  # manifests, signatures, listings, API answers: never more than this
POINTER_LIMIT = 1024  # a `latest` file holds one version name


class Http:
    """An httpx client with the retry policy and the bounds of the module docstring applied to
    every request.

    Args:
        policy: attempts, backoff, the time budget, timeouts, the minimum rate
            (default `RetryPolicy.for_downloads()`).
        allow_redirect_hosts: hosts any source may redirect to beyond its own origin and the
            hosts it names itself: `HOST`, `HOST:PORT` or `*.DOMAIN` (a list, or one string
            separated by commas or whitespace). Never a way to a private address from a public
            origin.
        sleep, clock, rand: injectable for tests; override the policy's own.
        resolve: host name -> its IP addresses (tests); default `socket.getaddrinfo`.
        progress: draw progress bars on stderr; None means only when stderr is a terminal.
        transport: an httpx transport (tests); None uses the default.

    Raises:
        ConfigError: a redirect host that is not of those forms.
    """

    def __init__(
        self,
        policy: RetryPolicy | None = None,
        *,
        allow_redirect_hosts: Sequence[str] | str | None = None,
        sleep: Callable[[float], None] | None = None,
        clock: Callable[[], float] | None = None,
        rand: Callable[[], float] | None = None,
        resolve: Callable[[str], list[str]] | None = None,
        progress: bool | None = None,
        transport: Any = None,
    ):
        self.policy = (policy or RetryPolicy.for_downloads()).with_clock(sleep, clock, rand)
        self.allow_redirect_hosts = host_patterns(allow_redirect_hosts)
        self.resolve = resolve or default_resolve
        self.progress = sys.stderr.isatty() if progress is None else progress
        self._transport = transport
        self._client: Any = None
        redact_request_logs()  # before the first request can be logged (idempotent)

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
                follow_redirects=False,  # followed by hand, each hop checked (stream)
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

    def _run(self, what: str, attempt: Callable[[Until], Any], source: str | None) -> Any:
        """`attempt(until)` under the retry policy, `until` the operation's deadline."""
        deadline = until(source, self.policy)
        return self.policy.run(
            lambda: attempt(deadline),
            what=what,
            classify=classify_attempt,
            error=Unreachable,
            until=deadline.at if deadline.source else None,
        )

    @contextlib.contextmanager
    def stream(
        self,
        url: str,
        headers: dict[str, str] | None,
        what: str,
        until: Until,
        redirect_hosts: Sequence[str] = (),
    ) -> Iterator[tuple[Any, Callable[[], None]]]:
        """An open streamed response (redirects followed and checked), and a check to call as
        bytes arrive (deadline, rate): the building block of every request here and of a
        download's attempts (download.py), always inside `_run`'s retry policy.

        Every failure of httpx becomes a typed error: transport failures and timeouts are
        retried (`Attempt`), the deadline is final (`Unreachable`), a refused redirect and
        anything else httpx raises are `BadResponse`.
        """
        import httpx

        first, credentials = split_credentials(url)
        left = until.at - self.clock()
        if left <= 0:
            raise Unreachable(f"{what}: {safe_url(url)}: {until.why}")
        p = self.policy
        watchdog = Watchdog(left)
        redirects = Redirects(self.allow_redirect_hosts, self.resolve, self._transport is None)

        def check() -> None:
            if watchdog.fired or self.clock() > until.at:
                raise Unreachable(f"{what}: {safe_url(url)}: {until.why}")

        current = first
        sent = dict(headers or {})
        auth = httpx.BasicAuth(*credentials) if credentials else None
        hops = 0
        try:
            while True:
                left = max(0.001, until.at - self.clock())
                request = self.client.build_request(
                    "GET",
                    current,
                    headers=sent,
                    timeout=httpx.Timeout(
                        min(p.timeout, left), connect=min(p.connect_timeout, left)
                    ),
                    extensions={"trace": watchdog.trace},
                )
                response = self.client.send(request, auth=auth, stream=True)
                try:
                    if not (
                        response.status_code in REDIRECT_STATUSES and "Location" in response.headers
                    ):
                        yield response, check
                        return
                    location = response.headers["Location"]
                finally:
                    response.close()
                hops += 1
                if hops > MAX_REDIRECTS:
                    raise BadResponse(
                        f"{what}: {safe_url(url)}: too many redirects (more than {MAX_REDIRECTS}: "
                        "a redirect loop?)"
                    )
                current, watchdog.guard = redirects.next_hop(
                    first, current, location, redirect_hosts, what
                )
                if origin(current) != origin(first):  # no credential leaves the origin
                    sent = {k: v for k, v in sent.items() if k.lower() in CARRIED}
                    auth = None
        except Refused as e:
            raise BadResponse(
                f"{what}: {safe_url(url)} redirected to {safe_url(current)}: {e}"
            ) from None
        except httpx.TransportError as e:  # connection, timeout, protocol: worth another try
            check()
            raise Attempt(_describe(e)) from None
        except (httpx.HTTPError, httpx.InvalidURL, httpx.StreamError) as e:
            raise BadResponse(f"{what}: {safe_url(url)}: {_describe(e)}") from None
        finally:
            watchdog.cancel()

    def check_status(self, response: Any, what: str, url: str) -> None:
        """Nothing for a 2xx; otherwise the typed error of the status (a retried `Attempt` for
        the statuses worth another try, `ArtifactNotFound` for 404, else `HttpStatus`)."""
        status = response.status_code
        if 200 <= status < 300:
            return
        decision = classify_status(status, response.headers, now=self.policy.wall)
        if decision is not None:
            raise Attempt(decision.reason, decision.wait)
        if status == 404:
            raise ArtifactNotFound(f"{what}: not found at {safe_url(url)} (HTTP 404)")
        kept = {
            k: printable(response.headers[k], 100)
            for k in ("x-amz-bucket-region", "x-error-code")
            if k in response.headers
        }
        if status < 400:
            raise HttpStatus(
                f"{what}: {safe_url(url)} answered HTTP {status} without a redirect to follow",
                status,
                kept,
            )
        hint = "; check the token (it is sent only to its own host)" if status in (401, 403) else ""
        raise HttpStatus(f"{what}: {safe_url(url)} answered HTTP {status}{hint}", status, kept)

    def _read_small(
        self, r: Any, check: Callable[[], None], what: str, url: str, limit: int
    ) -> bytes:
        """The decoded body of an open response, at most `limit` bytes.

        Raises:
            BadResponse: more than `limit` bytes (announced, or once decoded), stacked or
                unknown encodings, an undecodable body.
        """
        decoder = Decoder(r.headers.get("Content-Encoding", ""), what, url)
        declared = content_length(r)
        too_big = f"{what}: {safe_url(url)}: more than {limit} bytes"
        if decoder.identity and declared is not None and declared > limit:
            raise BadResponse(f"{too_big} ({declared} announced); not read")
        rate = Rate(self.policy, self.clock)
        body = bytearray()
        received = 0
        for chunk in r.iter_raw():
            received += len(chunk)
            for piece in decoder.feed(chunk, limit - len(body)):
                body += piece
                if len(body) > limit:
                    coded = f" once decoded ({decoder.coding})" if decoder.coding else ""
                    raise BadResponse(f"{too_big}{coded}; not read further")
            check()
            rate.update(received, False)
        decoder.finish()
        return bytes(body)

    # -- requests ------------------------------------------------------------------------

    def get_bytes(
        self,
        url: str,
        *,
        what: str,
        headers: dict[str, str] | None = None,
        limit: int = SMALL_FILE_LIMIT,
        source: str | None = None,
        redirect_hosts: Sequence[str] = (),
    ) -> bytes:
        """The body of a small file, at most `limit` bytes once decoded.

        Args:
            source: the source's name: the request counts against its budget for the fetch
                (`source_deadlines`).
            redirect_hosts: hosts the source's redirects may lead to beyond its origin.

        Raises:
            ArtifactNotFound: HTTP 404.
            Unreachable: connection failures, timeouts, 5xx or 429 beyond the retry policy; a
                server slower than the policy's minimum rate or a deadline.
            BadResponse: a refused redirect or too many, a body over `limit` bytes (declared,
                sent, or once decoded), stacked or unknown encodings, an undecodable body.
            HttpStatus: another HTTP error (401, 403, ...).
        """

        def attempt(until: Until) -> bytes:
            h = {"Accept-Encoding": "gzip", **(headers or {})}
            with self.stream(url, h, what, until, redirect_hosts) as (r, check):
                self.check_status(r, what, url)
                return self._read_small(r, check, what, url, limit)

        return self._run(what, attempt, source)

    def get_json(
        self,
        url: str,
        *,
        what: str,
        headers: dict[str, str] | None = None,
        source: str | None = None,
        redirect_hosts: Sequence[str] = (),
    ) -> Any:
        """A small JSON document (see get_bytes).

        Raises:
            BadResponse: not JSON; and everything get_bytes raises.
        """
        import json

        body = self.get_bytes(
            url, what=what, headers=headers, source=source, redirect_hosts=redirect_hosts
        )
        try:
            return json.loads(body)
        except (ValueError, RecursionError) as e:
            raise BadResponse(f"{what}: {safe_url(url)} did not answer JSON: {e}") from None

    def get_if_changed(
        self,
        url: str,
        *,
        what: str,
        etag: str | None = None,
        last_modified: str | None = None,
        headers: dict[str, str] | None = None,
        limit: int = SMALL_FILE_LIMIT,
        source: str | None = None,
        redirect_hosts: Sequence[str] = (),
    ) -> tuple[bytes | None, str | None, str | None]:
        """A small file unless unchanged: (the body, or None when the server answered 304 Not
        Modified to If-None-Match `etag` / If-Modified-Since `last_modified`; its ETag; its
        Last-Modified). What polls a model index (pipeline/client/index.py) uses; the body is
        bounded and decoded as get_bytes' is.

        Raises:
            As get_bytes.
        """
        h = {"Accept-Encoding": "gzip", **(headers or {})}
        if etag:
            h["If-None-Match"] = etag
        elif last_modified:
            h["If-Modified-Since"] = last_modified

        def attempt(until: Until) -> tuple[bytes | None, str | None, str | None]:
            with self.stream(url, h, what, until, redirect_hosts) as (r, check):
                if r.status_code == 304:
                    return None, etag, last_modified
                self.check_status(r, what, url)
                body = self._read_small(r, check, what, url, limit)
                return body, r.headers.get("ETag"), r.headers.get("Last-Modified")

        return self._run(what, attempt, source)

    def download(
        self,
        url: str,
        part: Path,
        *,
        size: int,
        what: str,
        headers: dict[str, str] | None = None,
        source: str | None = None,
        redirect_hosts: Sequence[str] = (),
    ) -> None:
        """Bring `part` up to `size` bytes from `url`, resuming what it already holds.

        `part` may hold the beginning of the file from an earlier, interrupted run: the rest
        is asked for with an HTTP Range request (a server that ignores it sends everything,
        and the file starts over). Bytes are not verified here; the caller checks blake3. The
        file never grows past `size`: a body announced or sent longer (once decoded, for a
        server that compresses although asked not to) is refused.

        Raises:
            ArtifactNotFound: HTTP 404.
            IntegrityError: the server announces or sends more bytes than the manifest says.
            DiskFull: no space left for the file.
            Unreachable / BadResponse / HttpStatus: as get_bytes.
        """
        part = Path(part)
        bar = Progress(Path(urlsplit(url).path).name, size, self.progress)
        job = Download(self, url, part, size, what, headers or {}, redirect_hosts, bar)
        try:
            self._run(what, job.attempt, source)
        finally:
            bar.close()


def _describe(e: Exception) -> str:
    text = str(e) or type(e).__name__
    return f"{type(e).__name__}: {text}"
