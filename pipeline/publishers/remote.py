"""What the remote targets share: `RemotePublisher` (GitHub, the Hugging Face Hub, S3), and what
a failure of GitHub or the Hub means: retry (and how long to wait) or give up.

`RemotePublisher` holds the plumbing: settings, one RetryPolicy through which every request
goes (`_call`), `check()` once before the first plan, the frame of `plan()` (the build checked
against its manifest, then the target read) and of `apply()` (a no-op or a refusal decided by
the plan, then the target's own steps), the read-back of uploaded files and the comparison of a
published release with the manifest.

`classify_github` and `classify_hf` feed `pipeline.retry.RetryPolicy`, reading statuses with the
same `pipeline.retry.classify_status` the client uses; `describe` makes one line
of any PyGithub, huggingface_hub, requests or httpx error, and `Redactor` removes every secret
from it before it reaches a log or an error. The client libraries are imported lazily, inside the
functions, so importing this module costs nothing.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse

from pipeline.errors import ConfigError, IntegrityError, bullets, first_line
from pipeline.manifest import MANIFEST_NAME, Manifest, verify_dir
from pipeline.publishers.base import Plan, PlanApply, PublishResult, local_files, version_exists
from pipeline.retry import RETRY_STATUS, Retry, RetryPolicy, _header, classify_status, host_wait

T = TypeVar("T")

__all__ = [
    "RETRY_STATUS",
    "HostUnavailable",
    "Redactor",
    "RemotePublisher",
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


class RemotePublisher(PlanApply, ABC):
    """The plumbing GitHub, the Hub and S3 share (see the module docstring).

    A subclass sets `name`, and implements `where` (the host and repository, at the start of
    every log line and error), `_classify` (which failures are worth another attempt), `check`,
    `_location` and `_read` (and `_files` when it holds other files than the release's) for
    `plan`, `_carry_out` for `apply`, and `verify`.
    """

    name: str
    # A no-op plan compared the published bytes themselves (GitHub and the Hub download every
    # file); S3's compares the blake3 stored with each object, so publish reads them back.
    plan_reads_bytes = True

    def __init__(
        self,
        target: Any,
        settings: Any,
        *,
        policy: RetryPolicy | None = None,
        config_name: str = "release.toml",
    ):
        self.target = target
        self.repo = target.require(f"needed by the {self.name} publisher", config_name)
        self.settings = settings
        self.policy = policy or RetryPolicy()
        self.config_name = config_name  # the config file in use, for advice in errors
        self.redact = Redactor(settings.secrets() if settings is not None else ())
        self._checked = False

    @property
    @abstractmethod
    def where(self) -> str:
        """The host and repository, bucket or prefix, in words."""

    @abstractmethod
    def _classify(self, exc: BaseException) -> Retry | None:
        """A Retry for a failure worth another attempt, None for a final one."""

    def _describe(self, exc: BaseException) -> str:
        return self.redact.describe(exc)

    def _call(self, operation: str, fn: Callable[[], T]) -> T:
        """`fn` under the retry policy; errors name the host, the object and the operation."""
        return self.policy.run(
            fn, what=f"{self.where}: {operation}", classify=self._classify, describe=self._describe
        )

    @abstractmethod
    def check(self) -> None:
        """Settings and secrets, before anything is uploaded anywhere (sets `_checked`)."""

    def _ensure_checked(self) -> None:
        if not self._checked:
            self.check()

    @staticmethod
    def _require_http_url(variable: str, url: str, like: str) -> None:
        """Raises: ConfigError: `url` (the value of `variable`) is not an http(s) URL."""
        parts = urlparse(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"{variable}: expected an http(s) URL like {like}, found {url!r}")

    # --- plan and apply -------------------------------------------------------------------

    def plan(self, release_dir: Path, manifest: Manifest, *, force: bool = False) -> Plan:
        """What the target holds of this release and what publishing would do (reads only).

        Raises:
            IntegrityError: the build does not match its manifest.
            RemoteError: the host failed or refused, after retries.
        """
        release_dir = Path(release_dir)
        verify_dir(release_dir, manifest)
        self._ensure_checked()
        files = self._files(release_dir, manifest)
        plan = Plan(
            self.name,
            self._location(manifest),
            release_dir,
            manifest,
            force=force,
            sizes={f.name: f.size for f in files},
        )
        self._read(plan, files)
        return plan

    @abstractmethod
    def _location(self, manifest: Manifest) -> str:
        """Where the release goes, in words (the plan's `location`)."""

    def _files(self, release_dir: Path, manifest: Manifest) -> Sequence[Any]:
        """What the target holds of a release: objects with `name`, `size` and `blake3` (the
        release's files, the manifest and its signature, unless the target holds others)."""
        return local_files(release_dir, manifest)

    @abstractmethod
    def _read(self, plan: Plan, files: Sequence[Any]) -> None:
        """Fill `plan` from the target's state (reads only)."""

    def apply(self, plan: Plan) -> PublishResult:
        """Carry out a plan (see the subclass's module docstring). Idempotent.

        Raises:
            IntegrityError: a file reads back with another blake3 (that copy is removed; run
                the same command again).
            VersionExistsError: the target holds other files under this published version and
                the plan is not forced.
            RemoteError: the host failed or refused, after retries.
        """
        result = PublishResult.applying(plan)
        if plan.noop:
            result.verified = self.plan_reads_bytes
            return result
        if plan.blocked:
            raise version_exists(plan)
        self._carry_out(plan)
        result.uploaded = list(plan.upload)
        result.verified = True
        return result

    @abstractmethod
    def _carry_out(self, plan: Plan) -> None:
        """The target's steps for a plan that changes something; every file read back."""

    @abstractmethod
    def verify(self, manifest: Manifest) -> None:
        """Re-read what was published and check every blake3 (IntegrityError on a mismatch)."""

    def _read_back(
        self,
        files: Iterable[Any],
        digest: Callable[[Any], str],
        remove: Callable[[Any], None],
        *,
        label: Callable[[Any], str],
        outcome: str,
    ) -> None:
        """Read each uploaded file back and check its blake3; a mismatch removes that copy (so
        the next run uploads it again) and fails.

        Raises:
            IntegrityError: naming the file, both digests and `outcome` (what was left, what to do).
        """
        for f in files:
            got = digest(f)
            if got != f.blake3:
                remove(f)
                raise IntegrityError(
                    f"{self.where}: {label(f)} reads back with blake3 {got[:16]}…, the build has "
                    f"{f.blake3[:16]}…; {outcome}"
                )

    def _compare_published(
        self,
        manifest: Manifest,
        present: Collection[str],
        digest: Callable[[str], str],
        read: Callable[[str], bytes],
        *,
        label: str,
        advice: str,
    ) -> None:
        """Check a published release against `manifest`: every file there with its blake3,
        and manifest.json equal to the build's.

        Raises:
            IntegrityError: listing every file missing or different, then `advice`.
        """
        problems = []
        for entry in manifest.files:
            if entry.name not in present:
                problems.append(f"{entry.name}: missing")
            elif digest(entry.name) != entry.blake3:
                problems.append(f"{entry.name}: blake3 differs from the manifest")
        if MANIFEST_NAME not in present:
            problems.append(f"{MANIFEST_NAME}: missing")
        elif Manifest.from_json(read(MANIFEST_NAME)) != manifest:
            problems.append(f"{MANIFEST_NAME}: differs from the build's manifest")
        if problems:
            raise IntegrityError(
                f"{self.where}: {label} does not match the build:\n{bullets(problems)}\n{advice}"
            )
