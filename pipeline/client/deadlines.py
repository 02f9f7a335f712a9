"""How long a request, and one fetch on one source, may take.

Every request is bounded in time three ways (see `RetryPolicy`): `timeout` without a byte,
`min_rate` bytes per second over `rate_window` seconds (`Rate`: a transfer slower than that is
dropped and resumed), and `max_total` seconds for the whole request, attempts and waits included.
The last is a deadline inside every read: a watchdog (`Watchdog`) shuts the connection's socket
down when it passes, so a server that trickles a byte at a time, in the headers or the body,
cannot hold a fetch longer. Inside `source_deadlines(seconds)` (what `Client.fetch` opens) every
request a source makes also counts against that source's own budget for the fetch, from its
first request on (`until`); when it is spent the source fails with `Unreachable` and the next one
is tried.
"""

from __future__ import annotations

import contextlib
import math
import socket
import threading
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from pipeline.client.errors import Attempt, Refused
from pipeline.errors import ConfigError
from pipeline.retry import RetryPolicy

DEFAULT_SOURCE_DEADLINE = 3600.0
SOURCE_DEADLINE_ENV = "RELEASE_SOURCE_DEADLINE"


class _SourceBudgets:
    """When each source's budget for one fetch ends (from its first request)."""

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
class Until:
    """A deadline on the policy's clock, and what to say when it passes."""

    at: float
    why: str
    source: bool = False  # the source's budget for the fetch, not the operation's own


class Watchdog:
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
                raise Refused(why)
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


class Rate:
    """Raises `Attempt` when fewer than `min_rate` bytes per second arrived over the last
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
            raise Attempt(
                f"too slow: {rate:.0f} bytes/s over {span:.0f} s, under the minimum of "
                f"{self.min_rate:.0f} bytes/s",
                progressed=progressed,
            )
        self.mark_time, self.mark_bytes = now, total


def until(source: str | None, policy: RetryPolicy) -> Until:
    """The deadline of one operation: its own `max_total`, or the source's budget for this
    fetch (`source_deadlines`) when that ends first."""
    own = Until(
        policy.clock() + policy.max_total,
        f"not finished within {policy.max_total:.0f} s (the server is too slow); "
        "try again later or raise --timeout",
    )
    budgets = _BUDGETS.get()
    if budgets is None or not source:
        return own
    end = budgets.end(source, policy.clock)
    if end >= own.at:
        return own
    return Until(
        end,
        f"the {budgets.seconds:.0f} s one fetch may spend on {source} ran out "
        f"(--source-deadline, ${SOURCE_DEADLINE_ENV}); the next source is tried",
        source=True,
    )
