"""Where a redirect may lead, and what may follow it there.

A redirect stays on the origin of the request unless the target host is one the source names
(GitHub's and the Hub's download hosts) or the operator allowed (`allow_redirect_hosts`,
`--allow-redirect-host`, `$RELEASE_ALLOW_REDIRECT_HOSTS`). From an origin with a public address
it never leads to a loopback, private or link-local address (the host is resolved before the
request, and the connected peer checked again after it: `Hop.guard`); an origin that is itself
loopback or private may redirect within its own class. Once a redirect leaves the origin, no
credential goes with it: only the `CARRIED` headers are sent on. Credentials in a URL
(`https://user:token@host/`) are moved into an Authorization header before the request is made or
logged (`split_credentials`).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import unquote, urljoin, urlsplit, urlunsplit

from pipeline.client.errors import BadResponse
from pipeline.client.printable import printable
from pipeline.errors import ConfigError
from pipeline.redaction import safe_url

MAX_REDIRECTS = 10
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
CARRIED = frozenset({"accept", "accept-encoding", "range", "user-agent"})  # across origins
REDIRECT_HOSTS_ENV = "RELEASE_ALLOW_REDIRECT_HOSTS"


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


def default_resolve(host: str) -> list[str]:
    """The addresses a host name resolves to (the system's resolver)."""
    infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in infos})


def proxied(url: str) -> bool:
    """Whether httpx sends a request for `url` through a proxy named in the environment
    (HTTPS_PROXY, ALL_PROXY, NO_PROXY...): then the proxy resolves the name and connects.
    urllib's reading of those variables, which httpx follows: the proxies are httpx's own
    setting, not one of this client's (pipeline/client/settings.py)."""
    import urllib.request

    proxies = urllib.request.getproxies_environment()
    parts = urlsplit(url)
    if not (proxies.get(parts.scheme) or proxies.get("all")):
        return False
    return not urllib.request.proxy_bypass_environment(parts.hostname or "", proxies)


def origin(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of `url`, the host lower-case and the port filled in."""
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


@dataclass(frozen=True)
class Redirects:
    """The rules one `Http` follows redirects by.

    Attributes:
        allowed: hosts any source may redirect to (the operator's), beyond those it names.
        resolve: host name -> its IP addresses.
        direct: requests go out through the real network (not a test transport), so a proxy
            named in the environment may carry them (`proxied`).
    """

    allowed: tuple[HostPattern, ...]
    resolve: Callable[[str], list[str]]
    direct: bool = True

    def next_hop(
        self, first: str, current: str, location: str, hosts: Sequence[str], what: str
    ) -> tuple[str, Callable[[str], str | None] | None]:
        """The URL a redirect leads to, and a check of the address it connects to (None: the
        origin's own host, or a proxy connects).

        Raises:
            BadResponse: a redirect this source may not follow (the message says why, and how to
                allow a host when the operator may).
        """
        try:
            target, _ = split_credentials(urljoin(current, location.strip()))
            target = urlunsplit(urlsplit(target)._replace(fragment=""))
            parts = urlsplit(target)
            scheme, host, port = origin(target)
        except ValueError:
            raise BadResponse(
                f"{what}: {safe_url(first)} redirected to '{printable(location, 80)}': not a "
                "URL; not followed"
            ) from None
        shown = safe_url(target) if parts.scheme in ("http", "https") else printable(location, 80)
        where = f"{what}: {safe_url(first)} redirected to {shown}"
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise BadResponse(f"{where}: not an http(s) URL; not followed")
        if urlsplit(current).scheme == "https" and parts.scheme == "http":
            raise BadResponse(f"{where}: from https to plain http; not followed")
        home = origin(first)
        if (scheme, host, port) == home:
            return target, None
        named = (*host_patterns(list(hosts)), *self.allowed)
        if not any(p.matches(host, port) for p in named):
            raise BadResponse(
                f"{where}: another host; not followed. If you trust it, allow it with "
                f"--allow-redirect-host {host} (or ${REDIRECT_HOSTS_ENV})"
            )
        return target, self._guard(where, home[1], host, via_proxy=self.direct and proxied(target))

    def _guard(
        self, where: str, home_host: str, host: str, *, via_proxy: bool
    ) -> Callable[[str], str | None] | None:
        """The check of the address a redirect to `host` connects to, after refusing now every
        address `host` resolves to that the check would refuse.

        Raises:
            BadResponse: `host` does not resolve (unless a proxy resolves it), or resolves to an
                address in another class than the origin's.
        """
        home_class = self._class_of(home_host)
        try:
            addresses = self._addresses(host)
        except (OSError, UnicodeError) as e:
            if via_proxy:  # the proxy resolves the name (an address literal is always checked)
                return None
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
        return None if via_proxy else refusal  # through a proxy, the peer is the proxy

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
