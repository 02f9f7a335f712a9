"""What a failure of GitHub or the Hugging Face Hub means: retry (and how long to wait) or give up.

`classify_github` and `classify_hf` feed `pipeline.retry.RetryPolicy`, reading statuses with the
same `pipeline.retry.classify_status` the client uses; `describe` makes one line
of any PyGithub, huggingface_hub, requests or httpx error, and `Redactor` removes every secret
from it before it reaches a log or an error. The client libraries are imported lazily, inside the
functions, so importing this module costs nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from pipeline.errors import first_line
from pipeline.retry import RETRY_STATUS, Retry, _header, classify_status, host_wait

__all__ = [
    "RETRY_STATUS",
    "HostUnavailable",
    "Redactor",
    "classify_github",
    "classify_hf",
    "describe",
    "host_wait",
    "http_status",
]


class HostUnavailable(Exception):
    """A transient HTTP failure (5xx, 429, timeout, reset) seen below huggingface_hub.

    Raised by the Hub transport instead of returning the response, so that the library's own
    backoff never sees it and our one policy decides.
    """

    def __init__(self, reason: str, status: int | None = None, retry_after: float | None = None):
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.retry_after = retry_after


def _is_network_error(exc: BaseException) -> str | None:
    """'timed out' / 'connection failed' for the network errors of requests, httpx2 and the stdlib."""
    import requests

    if isinstance(exc, requests.exceptions.Timeout | TimeoutError):
        return "timed out"
    if isinstance(
        exc, requests.exceptions.ConnectionError | requests.exceptions.ChunkedEncodingError
    ):
        return "connection failed"
    if isinstance(exc, ConnectionError):  # http.client.RemoteDisconnected, resets, broken pipes
        return "connection failed"
    try:
        import httpx2
    except ImportError:  # pragma: no cover - huggingface_hub not installed
        return None
    if isinstance(exc, httpx2.TimeoutException):
        return "timed out"
    if isinstance(exc, httpx2.TransportError):
        return "connection failed"
    return None


def classify_github(exc: BaseException, now: Callable[[], float] = time.time) -> Retry | None:
    """Retry for 5xx, 408/429, rate limits (primary and secondary) and network errors."""
    import requests
    from github import GithubException

    if isinstance(exc, requests.exceptions.RetryError):
        return None  # PyGithub's own urllib3 retry already spent its attempts
    if isinstance(exc, GithubException):
        message = exc.data.get("message", "") if isinstance(exc.data, dict) else ""
        return classify_status(exc.status, exc.headers, str(message), now)
    if why := _is_network_error(exc):
        return Retry(why)
    return None


def _chain(exc: BaseException) -> list[BaseException]:
    """The exception and what it wraps (huggingface_hub raises RuntimeError("Error while
    uploading ...") from the real failure)."""
    out: list[BaseException] = []
    e: BaseException | None = exc
    while e is not None and e not in out and len(out) < 8:
        out.append(e)
        e = e.__cause__ or e.__context__
    return out


def classify_hf(exc: BaseException) -> Retry | None:
    """Retry for what the transport flagged (5xx, 429, network) and for network errors that
    surfaced while a body streamed, also when huggingface_hub wrapped them."""
    for e in _chain(exc):
        if (decision := _classify_hf_one(e)) is not None:
            return decision
    return None


def _classify_hf_one(exc: BaseException) -> Retry | None:
    from huggingface_hub.errors import HfHubHTTPError

    if isinstance(exc, HostUnavailable):
        return Retry(exc.reason, exc.retry_after)
    if isinstance(exc, HfHubHTTPError):
        if exc.response is None:
            return None
        return classify_status(exc.response.status_code, exc.response.headers)
    if why := _is_network_error(exc):
        return Retry(why)
    return None


def http_status(exc: BaseException) -> int | None:
    """The HTTP status behind a PyGithub or huggingface_hub error, if any."""
    status = getattr(exc, "status", None)
    if isinstance(status, int):
        return status
    response = getattr(exc, "response", None)
    code = getattr(response, "status_code", None)
    return code if isinstance(code, int) else None


def describe(exc: BaseException) -> str:
    """One line about a client-library error (no traceback, no response dump)."""
    import requests

    if isinstance(exc, requests.exceptions.RetryError):
        return f"the server kept failing through PyGithub's own retries ({first_line(exc)})"
    try:
        from github import GithubException
    except ImportError:  # pragma: no cover
        GithubException = ()  # type: ignore[assignment]  # noqa: N806
    if isinstance(exc, GithubException):
        data = exc.data if isinstance(exc.data, dict) else {}
        msg = data.get("message") or exc.message or ""
        codes = [e.get("code") for e in data.get("errors", []) if isinstance(e, dict)]
        return (
            f"HTTP {exc.status}"
            + (f" {msg}" if msg else "")
            + (f" ({', '.join(c for c in codes if c)})" if any(codes) else "")
        )
    if isinstance(exc, HostUnavailable):
        return exc.reason
    status = http_status(exc)
    if status is None and exc.__cause__ is not None:  # a library's wrapper: say what it wraps
        return f"{first_line(exc)} ({describe(exc.__cause__)})"
    if status is not None:
        response = getattr(exc, "response", None)
        server = getattr(exc, "server_message", None) or (
            _header(getattr(response, "headers", None), "X-Error-Message") or ""
        )
        return f"HTTP {status}" + (f" {server}" if server else f" {first_line(exc)}")
    return f"{type(exc).__name__}: {first_line(exc)}"


class Redactor:
    """Replaces every known secret in a text by `***` (tokens, keys)."""

    def __init__(self, secrets: Iterable[str | None]):
        self.secrets = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for s in self.secrets:
            text = text.replace(s, "***")
        return text

    def describe(self, exc: BaseException) -> str:
        return self(describe(exc))
