"""The client's own errors: what a source's transport and the cache raise.

The fetch loop knows each one: `Unreachable`, `BadResponse`, `HttpStatus` (and the core's
`ArtifactNotFound`) fail one source and the next is tried; `CacheError` and `DiskFull` stop the
fetch (every source would meet the same cache). `Attempt` and `Refused` never leave the
transport: they are how one request says "retry me" (to `RetryPolicy.run`) and "this address
may not be reached" (from the connection hook to the redirect loop).
"""

from __future__ import annotations

from pipeline.errors import ReleaseError, RemoteError
from pipeline.retry import Retry

__all__ = [
    "Attempt",
    "BadResponse",
    "CacheError",
    "DiskFull",
    "HttpStatus",
    "Refused",
    "Unreachable",
    "classify_attempt",
]


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


class Attempt(Exception):
    """One failed attempt that may be retried (carries the policy's `Retry`)."""

    def __init__(self, why: str, wait: float | None = None, progressed: bool = False):
        super().__init__(why)
        self.decision = Retry(why, wait, progressed)


class Refused(Exception):
    """A connection to an address a redirect may not reach (raised from the trace hook)."""


def classify_attempt(e: BaseException) -> Retry | None:
    """The retry decision an `Attempt` carries; None (final) for anything else."""
    return e.decision if isinstance(e, Attempt) else None
