"""One retry policy for every remote host, publishers and client alike, and one reading of HTTP
failures: which are worth another attempt, and how long the host asked us to wait.

A caller wraps one idempotent operation (or one that re-reads the remote state, or resumes a
download, before it acts) in `RetryPolicy.run`, with a `classify` function that says whether a
failure is worth another attempt (`Retry(reason, wait)`) or final (None). The wait is the host's
own (Retry-After, a rate limit's reset time) when it gave one, otherwise exponential backoff
(with jitter for the client, so that N servers that failed together do not retry together), and
every wait goes through an injectable `sleep` and every deadline through an injectable `clock`,
so tests check the exact waits and never sleep.

Standard library only: the base install of the client (no publish extra) imports it.
"""

from __future__ import annotations

import email.utils
import logging
import random
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import TypeVar

from pipeline.errors import ReleaseError, RemoteError

log = logging.getLogger("pipeline.retry")
T = TypeVar("T")

# 408 Request Timeout, 429 Too Many Requests and the 5xx that mean "not now". 501 Not Implemented
# and 505 HTTP Version Not Supported will say the same on every attempt.
RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})
_FINAL_5XX = frozenset({501, 505})
_HF_RATELIMIT = re.compile(r"r\s*=\s*0\s*;\s*t\s*=\s*(\d+)")


@dataclass(frozen=True)
class Retry:
    """A failure worth another attempt: why, how long the host asked to wait (None: back off),
    and whether the attempt made progress (a download that received bytes resumes from them, so
    it does not count against the attempts)."""

    reason: str
    wait: float | None = None
    progressed: bool = False


Classifier = Callable[[BaseException], Retry | None]


def _header(headers: Mapping[str, str] | None, name: str) -> str | None:
    if not headers:
        return None
    for k, v in headers.items():
        if k.lower() == name.lower():
            return v
    return None


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def host_wait(
    headers: Mapping[str, str] | None, now: Callable[[], float] = time.time
) -> float | None:
    """Seconds the host asked us to wait: Retry-After (seconds or HTTP date), GitHub's
    X-RateLimit-Reset when X-RateLimit-Remaining is 0, or the Hub's `ratelimit: ...;r=0;t=N`."""
    wait = parse_retry_after(_header(headers, "Retry-After"), now())
    if wait is not None:
        return wait
    if _header(headers, "X-RateLimit-Remaining") == "0":
        reset = _header(headers, "X-RateLimit-Reset")
        if reset and reset.strip().isdigit():
            return max(0.0, int(reset) - now()) + 1.0  # the reset second may still be limited
    if m := _HF_RATELIMIT.search(_header(headers, "RateLimit") or ""):
        return float(m.group(1)) + 1.0
    return None


def classify_status(
    status: int,
    headers: Mapping[str, str] | None = None,
    message: str = "",
    now: Callable[[], float] = time.time,
) -> Retry | None:
    """The one rule for an HTTP error status, for every host: retry 408, 429, 5xx (except 501
    and 505) and rate-limited 403s (a reset header, or "rate limit" in the message), waiting what
    the host asked when it did; anything else is final (None)."""
    if status < 400:
        return None
    wait = host_wait(headers, now)
    if status in RETRY_STATUS or (500 <= status < 600 and status not in _FINAL_5XX):
        return Retry(f"HTTP {status}", wait)
    if status == 403 and (wait is not None or "rate limit" in message.lower()):
        return Retry("rate limited (HTTP 403)", wait)
    return None


@dataclass
class RetryPolicy:
    """How often and how long to retry a remote operation, and how long to wait for bytes.

    Attributes:
        max_attempts: attempts per operation, the first included (attempts that made progress,
            see `Retry.progressed`, are not counted).
        max_total: seconds an operation may take, waits included; a wait that would end later
            is not taken (the error is raised at once, saying so). The client also ends a
            transfer still running at that moment (see `pipeline.client.network`).
        base_delay, max_delay: backoff after failed attempt n is
            min(max_delay, base_delay * 2**(n-1)), times a random factor in [0.5, 1) when
            `jitter` is on.
        timeout: seconds to connect or to wait for the next bytes of one request.
        min_rate: the client drops (and resumes) a transfer that brought fewer bytes per second
            than this over `rate_window` seconds (0: never).
        sleep, clock, wall, rand: injectable for tests (`clock` is monotonic seconds, `wall` is
            the epoch time that rate-limit reset headers are compared with).
        waits: every wait taken, in order (tests and the final message read it).
    """

    max_attempts: int = 5
    max_total: float = 900.0
    base_delay: float = 2.0
    max_delay: float = 60.0
    jitter: bool = False
    timeout: float = 60.0
    connect_timeout: float = 10.0
    min_rate: float = 0.0
    rate_window: float = 30.0
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic
    wall: Callable[[], float] = time.time
    rand: Callable[[], float] = random.random
    waits: list[float] = field(default_factory=list)

    @classmethod
    def for_downloads(cls, **overrides: object) -> RetryPolicy:
        """The client's defaults: 6 attempts, backoff from 0.5 s with jitter up to 30 s, 15
        minutes per file, 10 s to connect, 60 s without a byte or 30 s under 1 kB/s."""
        defaults: dict[str, object] = {
            "max_attempts": 6,
            "base_delay": 0.5,
            "max_delay": 30.0,
            "jitter": True,
            "min_rate": 1024.0,
        }
        return cls(**{**defaults, **overrides})  # type: ignore[arg-type]

    def with_clock(
        self,
        sleep: Callable[[float], None] | None = None,
        clock: Callable[[], float] | None = None,
        rand: Callable[[], float] | None = None,
    ) -> RetryPolicy:
        """A copy with other time sources (those given), sharing nothing else mutable."""
        given = (("sleep", sleep), ("clock", clock), ("rand", rand))
        changes = {k: v for k, v in given if v is not None}
        return replace(self, waits=[], **changes) if changes else self

    def backoff(self, attempt: int) -> float:
        """The wait after failed attempt number `attempt` (1-based) when the host named none."""
        wait = min(self.max_delay, self.base_delay * 2 ** (attempt - 1))
        return wait * (0.5 + self.rand() / 2) if self.jitter else wait

    def run(
        self,
        fn: Callable[[], T],
        *,
        what: str,
        classify: Classifier,
        describe: Callable[[BaseException], str] = str,
        error: type[RemoteError] = RemoteError,
        until: float | None = None,
    ) -> T:
        """Call `fn` until it succeeds, fails for good, or the attempts or time run out.

        Args:
            fn: the operation; it must be safe to repeat.
            what: "<host> <object>: <operation>", the start of every log line and error.
            classify: Retry for a transient failure, None for a final one.
            describe: one line for an exception, without secrets.
            error: the RemoteError subclass raised when the attempts or the time run out.
            until: a deadline on `clock` that may end before `max_total` does (the client's
                budget for one source): a wait that would end after it is not taken either.

        Raises:
            RemoteError: a final failure (`error` when attempts or time ran out).
            ReleaseError: raised by `fn` itself; passed through untouched.
        """
        start = self.clock()
        failures = 0
        attempt = 0
        while True:
            attempt += 1
            try:
                return fn()
            except ReleaseError:
                raise
            except Exception as e:
                decision = classify(e)
                if decision is None:
                    raise RemoteError(f"{what} failed: {describe(e)}") from e
                if not decision.progressed:
                    failures += 1
                why = (
                    f"{decision.reason} ({describe(e)})"
                    if describe(e) != decision.reason
                    else decision.reason
                )
                elapsed = self.clock() - start
                if failures >= self.max_attempts:
                    raise error(
                        f"{what} failed: {why}; gave up after {attempt} attempts in "
                        f"{elapsed:.0f} s; run the same command again later"
                    ) from e
                wait = (
                    decision.wait if decision.wait is not None else self.backoff(max(failures, 1))
                )
                if elapsed + wait >= self.max_total:  # no time would be left to try
                    asked = (
                        "the host asks to wait" if decision.wait is not None else "the next wait is"
                    )
                    raise error(
                        f"{what} failed: {why}; {asked} {wait:.0f} s, beyond the "
                        f"{self.max_total:.0f} s this operation may take (gave up after {attempt} "
                        f"attempts in {elapsed:.0f} s); run the same command again later"
                    ) from e
                if until is not None and self.clock() + wait >= until:
                    raise error(
                        f"{what} failed: {why}; the next wait ({wait:.0f} s) would end after the "
                        f"deadline of this operation (gave up after {attempt} attempts in "
                        f"{elapsed:.0f} s)"
                    ) from e
                log.warning(
                    "%s: %s; retry %d of %d in %.1f s",
                    what,
                    decision.reason,
                    attempt,
                    self.max_attempts - 1,
                    wait,
                )
                self.waits.append(wait)
                self.sleep(wait)
