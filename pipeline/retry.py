"""One retry policy for every remote host: bounded in attempts and in total time, waits logged.

A caller wraps one idempotent operation (or one that re-reads the remote state before it acts)
in `RetryPolicy.run`, with a `classify` function that says whether a failure is worth another
attempt (`Retry(reason, wait)`) or final (None). The wait is the host's own (Retry-After, a rate
limit's reset time) when it gave one, otherwise exponential backoff without jitter, so tests can
check the exact waits with an injected `sleep` and `clock` and never sleep.

Standard library only: the client on servers may use it too.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from pipeline.errors import ReleaseError, RemoteError

log = logging.getLogger("pipeline.retry")
T = TypeVar("T")


@dataclass(frozen=True)
class Retry:
    """A failure worth another attempt: why, and how long the host asked to wait (None: back off)."""

    reason: str
    wait: float | None = None


Classifier = Callable[[BaseException], Retry | None]


@dataclass
class RetryPolicy:
    """How often and how long to retry a remote operation.

    Attributes:
        max_attempts: attempts per operation, the first included.
        max_total: seconds an operation may take, waits included; a wait that would end later
            is not taken (the error is raised at once, saying when the host would be ready).
        base_delay, max_delay: backoff after attempt n is min(max_delay, base_delay * 2**(n-1)).
        timeout: seconds to connect or to wait for the next bytes of one request.
        sleep, clock, wall: injectable for tests (`clock` is monotonic seconds, `wall` is the
            epoch time that rate-limit reset headers are compared with).
        waits: every wait taken, in order (tests and the final message read it).
    """

    max_attempts: int = 5
    max_total: float = 900.0
    base_delay: float = 2.0
    max_delay: float = 60.0
    timeout: float = 60.0
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic
    wall: Callable[[], float] = time.time
    waits: list[float] = field(default_factory=list)

    def backoff(self, attempt: int) -> float:
        """The wait after failed attempt number `attempt` (1-based) when the host named none."""
        return min(self.max_delay, self.base_delay * 2 ** (attempt - 1))

    def run(
        self,
        fn: Callable[[], T],
        *,
        what: str,
        classify: Classifier,
        describe: Callable[[BaseException], str] = str,
    ) -> T:
        """Call `fn` until it succeeds, fails for good, or the attempts or time run out.

        Args:
            fn: the operation; it must be safe to repeat.
            what: "<host> <object>: <operation>", the start of every log line and error.
            classify: Retry for a transient failure, None for a final one.
            describe: one line for an exception, without secrets.

        Raises:
            RemoteError: a final failure, or the last transient one when attempts or time ran out.
            ReleaseError: raised by `fn` itself; passed through untouched.
        """
        start = self.clock()
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
                wait = decision.wait if decision.wait is not None else self.backoff(attempt)
                elapsed = self.clock() - start
                if attempt >= self.max_attempts:
                    raise RemoteError(
                        f"{what} failed: {decision.reason} ({describe(e)}); gave up after "
                        f"{attempt} attempts in {elapsed:.0f} s; run the same command again later"
                    ) from e
                if elapsed + wait > self.max_total:
                    raise RemoteError(
                        f"{what} failed: {decision.reason} ({describe(e)}); the host asks to wait "
                        f"{wait:.0f} s, beyond the {self.max_total:.0f} s this operation may take; "
                        "run the same command again after that"
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
