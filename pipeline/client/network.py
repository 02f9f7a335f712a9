"""HTTP for the client: timeouts, the one retry policy, resumable downloads, progress on a terminal,
and one set of bounds for every byte a source sends.

Every request is bounded in time three ways (see `RetryPolicy`): `timeout` without a byte,
`min_rate` bytes per second over `rate_window` seconds (a transfer slower than that is dropped and
resumed), and `max_total` seconds for the whole request, attempts and waits included. The last is
a deadline inside every read: a watchdog shuts the connection's socket down when it passes, so a
server that trickles a byte at a time, in the headers or the body, cannot hold a fetch longer.
Inside `source_deadlines(seconds)` (what `Client.fetch` opens) every request a source makes also
counts against that source's own budget for the fetch, from its first request on; when it is
spent the source fails with `Unreachable` and the next one is tried.

Every body is bounded in size *after decoding*: a small file (`get_bytes`) by its limit, a model
file (`download`) by the manifest's size. The client decodes the body itself, step by step with a
bounded output per step, and accepts at most one content coding (gzip or deflate): a stacked
`Content-Encoding: gzip, gzip` is refused before a byte is inflated.

Redirects are followed by hand, at most `MAX_REDIRECTS`: a redirect stays on the origin of the
request unless the target host is one the source names (GitHub's and the Hub's download hosts) or
the operator allowed (`allow_redirect_hosts`, `--allow-redirect-host`). From an origin with a
public address it never leads to a loopback, private or link-local address (the host is resolved
before the request, and the connected peer checked again after it); an origin that is itself
loopback or private may redirect within its own class. Once a redirect leaves the origin, no
credential goes with it: only Accept, Accept-Encoding, Range and User-Agent are sent on.

Every failure becomes a typed error the fetch loop knows (the next source is then tried):
`Unreachable` (connection, timeout, 5xx/429 after the retries, too slow, a deadline),
`BadResponse` (a refused redirect, an undecodable or oversized body, a malformed answer),
`ArtifactNotFound` (404), `HttpStatus` (another final HTTP status). Credentials in a URL
(`https://user:token@host/`) are moved into an Authorization header before the request is made or
logged, so neither httpx's log nor ours ever shows them; query strings are never logged either.

httpx is imported on first use, so importing `pipeline.client` stays cheap. Every wait goes
through an injectable `sleep`, every deadline through an injectable `clock` and every name lookup
through an injectable `resolve`, so the tests check the exact waits without sleeping.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import logging
import math
import socket
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urljoin, urlsplit, urlunsplit

from pipeline import __version__, atomic
from pipeline.client.printable import printable
from pipeline.errors import ArtifactNotFound, ConfigError, IntegrityError, ReleaseError, RemoteError
from pipeline.retry import Retry, RetryPolicy, classify_status, parse_retry_after

__all__ = [
    "BadResponse",
    "CacheError",
    "DiskFull",
    "Http",
    "HttpStatus",
    "Progress",
    "RetryPolicy",
    "Unreachable",
    "address_class",
    "parse_retry_after",
    "source_deadlines",
    "split_credentials",
]

log = logging.getLogger("pipeline.client")

CHUNK = 1 << 20
SMALL_FILE_LIMIT = 16 << 20  # manifests, signatures, listings, API answers: never more than this
POINTER_LIMIT = 1024  # a `latest` file holds one version name
MAX_REDIRECTS = 10
DEFAULT_SOURCE_DEADLINE = 3600.0
SOURCE_DEADLINE_ENV = "RELEASE_SOURCE_DEADLINE"
REDIRECT_HOSTS_ENV = "RELEASE_ALLOW_REDIRECT_HOSTS"
_WBITS = {"gzip": 31, "x-gzip": 31, "deflate": 15}  # the codings decoded (one at most)
_CARRIED = frozenset({"accept", "accept-encoding", "range", "user-agent"})  # across origins
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


class Unreachable(RemoteError):
    """A source could not be reached, kept failing (connection, timeout, 5xx, 429), or was too
    slow (under the minimum rate, past the request's deadline or the source's)."""


class BadResponse(RemoteError):
    """A source answered, but not with a usable HTTP response: a refused redirect or too many, a
    body that does not decode or is larger than it may be, a malformed message."""


class HttpStatus(RemoteError):
    """A final HTTP error status (401, 403, 400, a 3xx without a Location...): `status`, and the
    few response headers a source reads to explain it (`headers`, lower-case names)."""

    def __init__(self, message: str, status: int, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.headers = headers or {}


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


class _Refused(Exception):
    """A connection to an address a redirect may not reach (raised from the trace hook)."""


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


# -- where a redirect may lead --------------------------------------------------------------


def address_class(ip: str) -> str:
    """ "loopback", "link-local", "private" (any other address that is not globally routable:
    RFC 1918, unique-local, shared, reserved, multicast) or "public"."""
    a = ipaddress.ip_address(ip.split("%", 1)[0])
    if isinstance(a, ipaddress.IPv6Address) and a.ipv4_mapped is not None:
        a = a.ipv4_mapped
    if a.is_loopback or a.is_unspecified:  # 0.0.0.0 reaches this host too
        return "loopback"
    if a.is_link_local:  # 169.254.169.254: the cloud metadata service
        return "link-local"
    return "public" if a.is_global and not a.is_multicast else "private"


def _default_resolve(host: str) -> list[str]:
    infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in infos})


def _proxied(url: str) -> bool:
    """Whether httpx sends a request for `url` through a proxy named in the environment
    (HTTPS_PROXY, ALL_PROXY, NO_PROXY...): then the proxy resolves the name and connects."""
    import urllib.request

    proxies = urllib.request.getproxies_environment()
    parts = urlsplit(url)
    if not (proxies.get(parts.scheme) or proxies.get("all")):
        return False
    return not urllib.request.proxy_bypass_environment(parts.hostname or "", proxies)


def _origin(url: str) -> tuple[str, str, int]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    port = parts.port or (443 if scheme == "https" else 80)
    return scheme, (parts.hostname or "").lower().rstrip("."), port


@dataclass(frozen=True)
class HostPattern:
    """A host a redirect may lead to: `HOST`, `HOST:PORT` or `*.DOMAIN` (any name under it)."""

    host: str
    port: int | None = None

    @classmethod
    def parse(cls, text: str) -> HostPattern:
        """Raises: ConfigError: not one of those forms."""
        raw = text.strip().lower()
        wildcard = raw.startswith("*.")
        try:
            parts = urlsplit("//" + (raw[2:] if wildcard else raw))
            port = parts.port
        except ValueError:
            parts, port = None, None
        host = (parts.hostname or "").rstrip(".") if parts else ""
        if not host or parts is None or parts.path or parts.query or parts.username or "*" in host:
            raise ConfigError(
                f"redirect host '{printable(text, 80)}': expected HOST, HOST:PORT or *.DOMAIN "
                "(e.g. downloads.example.com, mirror.internal:8443, *.cdn.example.net)"
            )
        return cls(("*." if wildcard else "") + host, port)

    def matches(self, host: str, port: int) -> bool:
        if self.port is not None and self.port != port:
            return False
        if self.host.startswith("*."):
            return host.endswith(self.host[1:])
        return host == self.host


def host_patterns(values: Sequence[str] | str | None) -> tuple[HostPattern, ...]:
    """Host patterns from a list, or from one string of them separated by commas or whitespace
    (an environment variable's form).

    Raises:
        ConfigError: one that is not HOST, HOST:PORT or *.DOMAIN.
    """
    if values is None:
        return ()
    if isinstance(values, str):
        values = values.replace(",", " ").split()
    return tuple(HostPattern.parse(v) for v in values if v.strip())


# -- a body decoded with a bound ------------------------------------------------------------


class _Decoder:
    """Decodes a body with at most one content coding (gzip or deflate), never producing more
    than the caller still has room for, plus one byte (so the caller sees the overflow and
    refuses it): a gzip bomb is stopped at the limit, not after inflating to memory."""

    def __init__(self, header: str, what: str, url: str):
        self.what, self.url = what, url
        codings = [c.strip().lower() for c in header.split(",")]
        codings = [c for c in codings if c and c != "identity"]
        if len(codings) > 1:
            raise BadResponse(
                f"{what}: {_safe(url)}: Content-Encoding '{printable(header, 80)}': "
                f"{len(codings)} stacked encodings; refusing the body (at most one of "
                "gzip or deflate is decoded)"
            )
        if codings and codings[0] not in _WBITS:
            raise BadResponse(
                f"{what}: {_safe(url)}: Content-Encoding '{printable(codings[0], 40)}' is not "
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
                f"{self.what}: {_safe(self.url)}: the body does not decode ({self.coding}): {e}"
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
                f"{self.what}: {_safe(self.url)}: the body does not decode ({self.coding}): it "
                "ends inside the compressed stream"
            )


# -- how long one fetch may spend on one source ----------------------------------------------


class _SourceBudgets:
    def __init__(self, seconds: float):
        self.seconds = seconds
        self._ends: dict[str, float] = {}
        self._lock = threading.Lock()

    def end(self, source: str, clock: Callable[[], float]) -> float:
        with self._lock:
            if source not in self._ends:
                self._ends[source] = clock() + self.seconds
            return self._ends[source]


_BUDGETS: ContextVar[_SourceBudgets | None] = ContextVar("release_source_budgets", default=None)


@contextlib.contextmanager
def source_deadlines(seconds: float | None) -> Iterator[None]:
    """Within this block, every request a source makes (named by its `source=`) shares one
    deadline: `seconds` from that source's first request. A block inside another uses the
    outer one's (one fetch, one budget per source). None or math.inf: no such deadline.

    Raises:
        ConfigError: `seconds` is not a positive number.
    """
    if _BUDGETS.get() is not None or seconds is None or math.isinf(seconds):
        yield
        return
    if not isinstance(seconds, int | float) or isinstance(seconds, bool) or not seconds > 0:
        raise ConfigError(f"source deadline: expected a number of seconds > 0, found {seconds!r}")
    token = _BUDGETS.set(_SourceBudgets(float(seconds)))
    try:
        yield
    finally:
        _BUDGETS.reset(token)


@dataclass(frozen=True)
class _Until:
    """A deadline on the policy's clock, and what to say when it passes."""

    at: float
    why: str
    source: bool = False  # the source's budget for the fetch, not the operation's own


# -- the sockets of one request ---------------------------------------------------------------


class _Deadline:
    """Shuts down the sockets of one request when its deadline passes (a `threading.Timer`), so
    that a read blocked on a trickling server returns. httpcore reports each new connection's
    stream through the request's `trace` extension; connections are not kept alive between
    requests, so every request's connection is a new one and is seen here. The same hook checks
    the address a redirected request actually connected to (`guard`), so a name that resolved to
    a public address before the request and to a private one for it is refused too."""

    def __init__(self, seconds: float):
        self.fired = False
        self.guard: Callable[[str], str | None] | None = None
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
        if event == "connection.connect_tcp.complete" and self.guard is not None:
            try:
                peer = str(sock.getpeername()[0])
            except (OSError, IndexError):
                peer = ""
            why = self.guard(peer) if peer else "the connected address is unknown"
            if why:
                with contextlib.suppress(Exception):
                    stream.close()
                raise _Refused(why)
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
        self.resolve = resolve or _default_resolve
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
                follow_redirects=False,  # followed by hand, each hop checked (_stream)
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

    def _until(self, source: str | None) -> _Until:
        """The deadline of one operation: its own `max_total`, or the source's budget for this
        fetch (`source_deadlines`) when that ends first."""
        p = self.policy
        own = _Until(
            self.clock() + p.max_total,
            f"not finished within {p.max_total:.0f} s (the server is too slow); "
            "try again later or raise --timeout",
        )
        budgets = _BUDGETS.get()
        if budgets is None or not source:
            return own
        end = budgets.end(source, self.clock)
        if end >= own.at:
            return own
        return _Until(
            end,
            f"the {budgets.seconds:.0f} s one fetch may spend on {source} ran out "
            f"(--source-deadline, ${SOURCE_DEADLINE_ENV}); the next source is tried",
            source=True,
        )

    def _run(self, what: str, attempt: Callable[[_Until], Any], source: str | None) -> Any:
        """`attempt(until)` under the retry policy, `until` the operation's deadline."""
        until = self._until(source)
        return self.policy.run(
            lambda: attempt(until),
            what=what,
            classify=_classify,
            error=Unreachable,
            until=until.at if until.source else None,
        )

    def _next_hop(
        self, first: str, current: str, location: str, hosts: Sequence[str], what: str
    ) -> tuple[str, Callable[[str], str | None] | None]:
        """The URL a redirect leads to, and a check of the address it connects to (None: the
        origin's own host).

        Raises:
            BadResponse: a redirect this source may not follow (the message says why, and how to
                allow a host when the operator may).
        """
        try:
            target, _ = split_credentials(urljoin(current, location.strip()))
            target = urlunsplit(urlsplit(target)._replace(fragment=""))
            parts = urlsplit(target)
            scheme, host, port = _origin(target)
        except ValueError:
            raise BadResponse(
                f"{what}: {_safe(first)} redirected to '{printable(location, 80)}': not a URL; "
                "not followed"
            ) from None
        shown = _safe(target) if parts.scheme in ("http", "https") else printable(location, 80)
        where = f"{what}: {_safe(first)} redirected to {shown}"
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise BadResponse(f"{where}: not an http(s) URL; not followed")
        if urlsplit(current).scheme == "https" and parts.scheme == "http":
            raise BadResponse(f"{where}: from https to plain http; not followed")
        home = _origin(first)
        if (scheme, host, port) == home:
            return target, None
        named = (*host_patterns(list(hosts)), *self.allow_redirect_hosts)
        if not any(p.matches(host, port) for p in named):
            raise BadResponse(
                f"{where}: another host; not followed. If you trust it, allow it with "
                f"--allow-redirect-host {host} (or ${REDIRECT_HOSTS_ENV})"
            )
        home_class = self._class_of(home[1])
        proxied = self._transport is None and _proxied(target)
        try:
            addresses = self._addresses(host)
        except (OSError, UnicodeError) as e:
            if proxied:  # the proxy resolves the name (an address literal is always checked)
                return target, None
            raise BadResponse(f"{where}: {host} does not resolve ({e}); not followed") from None

        def refusal(ip: str) -> str | None:
            kind = address_class(ip)
            if kind == "public" or kind == home_class:
                return None
            return (
                f"{host} is at {ip}, a {kind} address, and the source is {home_class}: "
                "a redirect never leads into another network"
            )

        for ip in addresses:
            why = refusal(ip)
            if why:
                raise BadResponse(f"{where}: {why}; not followed")
        return target, None if proxied else refusal  # through a proxy, the peer is the proxy

    def _addresses(self, host: str) -> list[str]:
        """The addresses of `host`: itself when it is an IP literal, else what it resolves to."""
        try:
            return [str(ipaddress.ip_address(host.split("%", 1)[0]))]
        except ValueError:
            return list(self.resolve(host))

    def _class_of(self, host: str) -> str:
        """The address class of the request's origin; "public" unless every address is another
        one class (a name that does not resolve is taken as public: the strictest)."""
        try:
            classes = {address_class(ip) for ip in self._addresses(host)}
        except (OSError, UnicodeError, ValueError):
            return "public"
        return classes.pop() if len(classes) == 1 else "public"

    @contextlib.contextmanager
    def _stream(
        self,
        url: str,
        headers: dict[str, str] | None,
        what: str,
        until: _Until,
        redirect_hosts: Sequence[str] = (),
    ) -> Iterator[tuple[Any, Callable[[], None]]]:
        """An open streamed response (redirects followed and checked), and a check to call as
        bytes arrive (deadline, rate).

        Every failure of httpx becomes a typed error: transport failures and timeouts are
        retried (`_Attempt`), the deadline is final (`Unreachable`), a refused redirect and
        anything else httpx raises are `BadResponse`.
        """
        import httpx

        first, credentials = split_credentials(url)
        left = until.at - self.clock()
        if left <= 0:
            raise Unreachable(f"{what}: {_safe(url)}: {until.why}")
        p = self.policy
        watchdog = _Deadline(left)

        def check() -> None:
            if watchdog.fired or self.clock() > until.at:
                raise Unreachable(f"{what}: {_safe(url)}: {until.why}")

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
                    if not (response.status_code in _REDIRECTS and "Location" in response.headers):
                        yield response, check
                        return
                    location = response.headers["Location"]
                finally:
                    response.close()
                hops += 1
                if hops > MAX_REDIRECTS:
                    raise BadResponse(
                        f"{what}: {_safe(url)}: too many redirects (more than {MAX_REDIRECTS}: "
                        "a redirect loop?)"
                    )
                current, watchdog.guard = self._next_hop(
                    first, current, location, redirect_hosts, what
                )
                if _origin(current) != _origin(first):  # no credential leaves the origin
                    sent = {k: v for k, v in sent.items() if k.lower() in _CARRIED}
                    auth = None
        except _Refused as e:
            raise BadResponse(f"{what}: {_safe(url)} redirected to {_safe(current)}: {e}") from None
        except httpx.TransportError as e:  # connection, timeout, protocol: worth another try
            check()
            raise _Attempt(_describe(e)) from None
        except (httpx.HTTPError, httpx.InvalidURL, httpx.StreamError) as e:
            raise BadResponse(f"{what}: {_safe(url)}: {_describe(e)}") from None
        finally:
            watchdog.cancel()

    def _check_status(self, response: Any, what: str, url: str) -> None:
        status = response.status_code
        if 200 <= status < 300:
            return
        decision = classify_status(status, response.headers, now=self.policy.wall)
        if decision is not None:
            raise _Attempt(decision.reason, decision.wait)
        if status == 404:
            raise ArtifactNotFound(f"{what}: not found at {_safe(url)} (HTTP 404)")
        kept = {
            k: printable(response.headers[k], 100)
            for k in ("x-amz-bucket-region", "x-error-code")
            if k in response.headers
        }
        if status < 400:
            raise HttpStatus(
                f"{what}: {_safe(url)} answered HTTP {status} without a redirect to follow",
                status,
                kept,
            )
        hint = "; check the token (it is sent only to its own host)" if status in (401, 403) else ""
        raise HttpStatus(f"{what}: {_safe(url)} answered HTTP {status}{hint}", status, kept)

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

        def attempt(until: _Until) -> bytes:
            h = {"Accept-Encoding": "gzip", **(headers or {})}
            with self._stream(url, h, what, until, redirect_hosts) as (r, check):
                self._check_status(r, what, url)
                decoder = _Decoder(r.headers.get("Content-Encoding", ""), what, url)
                declared = _content_length(r)
                too_big = f"{what}: {_safe(url)}: more than {limit} bytes"
                if decoder.identity and declared is not None and declared > limit:
                    raise BadResponse(f"{too_big} ({declared} announced); not read")
                rate = _Rate(self.policy, self.clock)
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

        def attempt(until: _Until) -> None:
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
                with self._stream(url, h, what, until, redirect_hosts) as (r, check):
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
                            f"Content-Range '{printable(r.headers.get('Content-Range'), 80)}' "
                            f"does not start at {have}"
                        )
                    elif have:
                        log.info("%s: resuming at byte %d of %d", what, have, size)
                    decoder = _Decoder(r.headers.get("Content-Encoding", ""), what, url)
                    declared = _content_length(r)
                    too_many = (
                        f"{what}: {_safe(url)} sends more than the {size} bytes the manifest says"
                    )
                    if decoder.identity and declared is not None and have + declared > size:
                        raise IntegrityError(
                            f"{too_many} ({declared} announced from byte {have}); not downloaded"
                        )
                    rate = _Rate(self.policy, self.clock)
                    received = 0
                    with _open_for_write(part, mode, what) as f:
                        for chunk in r.iter_raw():  # as it arrives: an error loses nothing
                            received += len(chunk)
                            for piece in decoder.feed(chunk, size - have - got):
                                if have + got + len(piece) > size:
                                    raise IntegrityError(too_many)
                                _write(f, piece, part, what)
                                got += len(piece)
                            bar.update(have + got)
                            check()
                            rate.update(received, got > 0)
                    decoder.finish()
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
            self._run(what, attempt, source)
        finally:
            bar.close()


def _content_length(response: Any) -> int | None:
    value = response.headers.get("Content-Length", "").strip()
    return int(value) if value.isdigit() else None


def _open_for_write(part: Path, mode: str, what: str) -> Any:
    try:
        return atomic.open_nofollow(part, mode)  # the cache: never through a planted link
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
