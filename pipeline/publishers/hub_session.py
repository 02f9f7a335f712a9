"""huggingface_hub's HTTP client while a publish runs: the publisher's timeouts, and fail-fast.

huggingface_hub has its own backoff for uploads and downloads, and its default HTTP client has
no timeout. The first publish installs, through the library's public `set_client_factory`, a
client (the library's own request hooks, redirects and headers) whose transport checks whether
a publish is under way: while one is (`hub_session`, any thread), every request the library
sends without a timeout of its own gets the publisher's, and every transient failure (5xx,
429, timeout, reset) becomes `HostUnavailable` before the library's backoff sees it, so our one
RetryPolicy decides; at any other time requests pass unchanged. No private part of
huggingface_hub is touched, and nothing is swapped back and forth (a factory installed later by
someone else is replaced again at the next publish).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

from pipeline.publishers.remote import RETRY_STATUS, HostUnavailable, host_wait

_SESSIONS: list[float] = []  # the timeouts of the open publish sessions, innermost last
_SESSIONS_LOCK = threading.Lock()


def _session_timeout() -> float | None:
    with _SESSIONS_LOCK:
        return _SESSIONS[-1] if _SESSIONS else None


def _install_client_factory() -> None:
    """Make huggingface_hub's shared client one of ours (see the module docstring), unless it
    already is. Public API only: `get_session`, `set_client_factory`, httpx's transport API."""
    import httpx2
    import huggingface_hub

    current = huggingface_hub.get_session()
    if getattr(current, "fastai_release_transport", False):
        return
    # what the library's own client sends with: request hooks (offline mode, request ids),
    # redirects, headers; no timeout of its own (the library's default), so that a timeout a
    # request carries is one the library chose for that call
    hooks = {k: list(v) for k, v in current.event_hooks.items()}
    follow, headers = current.follow_redirects, current.headers.copy()

    class FailFast(httpx2.BaseTransport):
        def __init__(self) -> None:
            self.inner = httpx2.HTTPTransport()

        def handle_request(self, request: httpx2.Request) -> httpx2.Response:
            session = _session_timeout()
            if session is None:  # no publish under way: the library's own behaviour
                return self.inner.handle_request(request)
            given = request.extensions.get("timeout") or {}
            if all(v is None for v in given.values()):  # the library chose none for this call
                request.extensions["timeout"] = httpx2.Timeout(
                    session, connect=min(session, 10.0)
                ).as_dict()
            where = f"{request.method} {request.url.path}"
            try:
                response = self.inner.handle_request(request)
            except httpx2.TimeoutException as e:
                raise HostUnavailable(f"timed out ({type(e).__name__}) on {where}") from e
            except httpx2.TransportError as e:
                raise HostUnavailable(f"connection failed ({type(e).__name__}) on {where}") from e
            if response.status_code in RETRY_STATUS:
                response.read()
                response.close()
                raise HostUnavailable(
                    f"HTTP {response.status_code} on {where}",
                    response.status_code,
                    host_wait(response.headers),
                )
            return response

        def close(self) -> None:
            self.inner.close()

    class Client(httpx2.Client):
        fastai_release_transport = True

    def factory() -> Any:
        return Client(
            event_hooks=hooks,
            follow_redirects=follow,
            timeout=None,
            headers=headers,
            transport=FailFast(),
        )

    huggingface_hub.set_client_factory(factory)


@contextlib.contextmanager
def hub_session(timeout: float) -> Iterator[None]:
    """Within the block, huggingface_hub's requests (from any thread) time out after
    `timeout` seconds (connect: at most 10) and fail fast on a transient failure."""
    _install_client_factory()
    with _SESSIONS_LOCK:
        _SESSIONS.append(timeout)
    try:
        yield
    finally:
        with _SESSIONS_LOCK:
            _SESSIONS.remove(timeout)
