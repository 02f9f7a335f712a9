"""URLs made safe to print or log: no query string, no user info (standard library only).

Both sides use it: the client's HTTP (`pipeline.client.network`) and the publishers that download
through PyGithub (requests, urllib3) or huggingface_hub (httpx). Nothing happens on import:
`redact_request_logs()` installs the filter where a transport is made (an `Http`, a publisher's
client), once per logger however often it is called.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlsplit, urlunsplit

# The loggers that write request lines: httpx (every request's full URL at INFO), urllib3
# (the request path with its query at DEBUG, the redirects it follows at INFO, its retries).
REQUEST_LOGGERS = (
    "httpx",
    "urllib3.connectionpool",  # request lines
    "urllib3.poolmanager",  # redirects it follows
    "urllib3.util.retry",  # "Incremented Retry for (url=...)"
)


def safe_url(url: str) -> str:
    """The URL without a query string or user info (never print a token)."""
    parts = urlsplit(url)
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


class RedactUrls(logging.Filter):
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
            record.args = tuple(redacted(a) for a in record.args)
        return True


def redacted(arg: Any) -> Any:
    """A log record's argument with the query and user info of a URL (or a path) taken out."""
    text = str(arg) if type(arg).__name__ == "URL" else arg
    if isinstance(text, str) and text.startswith(("http://", "https://")):
        parts = urlsplit(text)
        if parts.query or parts.username or parts.password:
            return safe_url(text) + ("?<redacted>" if parts.query else "")
    elif isinstance(text, str) and text.startswith("/") and "?" in text:  # urllib3: a path
        return text.split("?", 1)[0] + "?<redacted>"
    return arg


_REDACT = RedactUrls()


def redact_request_logs() -> None:
    """Install the URL redaction on httpx's and urllib3's request loggers (idempotent). The
    client's `Http` calls it when it is made (so it also covers huggingface_hub's httpx in that
    process), and the GitHub and Hub publishers before they download."""
    for name in REQUEST_LOGGERS:
        logger = logging.getLogger(name)
        if _REDACT not in logger.filters:
            logger.addFilter(_REDACT)
