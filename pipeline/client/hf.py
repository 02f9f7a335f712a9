"""The `hf:ORG/NAME` source: one Hugging Face Hub model repository, read over plain HTTP."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from pipeline.client.errors import HttpStatus
from pipeline.client.network import Http
from pipeline.client.settings import ClientSettings
from pipeline.client.sources import DEFAULT_TAG, host_port, version_in_manifest
from pipeline.errors import ArtifactNotFound, ConfigError
from pipeline.manifest import MANIFEST_NAME

# Where huggingface.co sends a file's download: its LFS CDN and Xet storage, all under these.
HF_DOWNLOAD_HOSTS = ("*.hf.co", "hf.co", "*.huggingface.co", "huggingface.co")


class HfSource:
    """One Hugging Face Hub model repository, read over the Hub's plain HTTP download endpoint
    (`<endpoint>/<repo>/resolve/<revision>/<file>`) with this client's `Http`: the same bounds
    as every other source (sizes, deadlines, redirects, retries, `--timeout`), and resumable
    downloads in our own cache. huggingface_hub is not needed to fetch.

    Versions are the revisions (tags) `v<version>`; `latest` is the version in the manifest on
    `main`. The endpoint is `endpoint`, else https://huggingface.co (`parse_source` passes
    `HF_ENDPOINT`); the token is `token`, else `settings.hf_token` (`HF_TOKEN`; the environment's
    when no settings are given), else huggingface_hub's stored login when it is installed. The
    token goes to the endpoint's own origin only. Redirects may lead to the endpoint and, for
    huggingface.co, to the Hub's CDN and Xet storage hosts (`HF_DOWNLOAD_HOSTS`).
    """

    def __init__(
        self,
        repo_id: str,
        *,
        token: str | None = None,
        endpoint: str | None = None,
        revision: str = DEFAULT_TAG,
        latest_revision: str = "main",
        progress: bool | None = None,
        http: Http | None = None,
        settings: ClientSettings | None = None,
    ):
        if repo_id.count("/") != 1 or not all(repo_id.split("/")):
            raise ConfigError(f"hf source: expected ORG/NAME, found {repo_id!r}")
        self.repo_id = repo_id
        if token is None:
            token = (ClientSettings.from_env() if settings is None else settings).hf_token
        self.token = token
        self.endpoint = (endpoint or "https://huggingface.co").rstrip("/")
        self.revision = revision
        self.latest_revision = latest_revision
        self.http = http or Http(progress=progress)
        self.name = f"hf:{repo_id}"

    @property
    def redirect_hosts(self) -> tuple[str, ...]:
        """The hosts this source's redirects may lead to."""
        host = urlsplit(self.endpoint).hostname or ""
        on_hub = host in ("huggingface.co", "hf.co")
        return (host_port(self.endpoint),) + (HF_DOWNLOAD_HOSTS if on_hub else ())

    def _token(self) -> str | None:
        if self.token:
            return self.token
        try:
            from huggingface_hub import get_token
        except ImportError:
            return None
        return get_token()

    def headers(self) -> dict[str, str] | None:
        token = self._token()
        return {"Authorization": f"Bearer {token}"} if token else None

    def _repo_path(self) -> str:
        return "/".join(quote(p, safe="") for p in self.repo_id.split("/"))

    def api_url(self, *parts: str) -> str:
        """`<endpoint>/api/models/<repo>/<parts...>`."""
        tail = "/".join(quote(p, safe="") for p in parts)
        return f"{self.endpoint}/api/models/{self._repo_path()}" + (f"/{tail}" if tail else "")

    def file_url(self, filename: str, revision: str) -> str:
        """`<endpoint>/<repo>/resolve/<revision>/<filename>`."""
        return (
            f"{self.endpoint}/{self._repo_path()}/resolve/{quote(revision, safe='')}/"
            f"{quote(filename, safe='')}"
        )

    def explained(self, what: str, fn: Any) -> Any:
        """`fn()`, with the Hub's answers for a missing or private repository explained."""
        try:
            return fn()
        except HttpStatus as e:
            if e.status == 401:  # the Hub's answer for a missing or a private repository
                hint = "" if self._token() else " (a private repository needs HF_TOKEN)"
                code = e.headers.get("x-error-code") or "RepoNotFound"
                raise ArtifactNotFound(f"{what}: HTTP 401 {code}{hint}") from None
            if e.status == 403:
                raise HttpStatus(
                    f"{what}: access refused (HTTP 403): a gated or private repository needs "
                    "HF_TOKEN with access to it",
                    e.status,
                    e.headers,
                ) from None
            raise

    def get_json(self, url: str, what: str) -> Any:
        """A JSON answer of the Hub's API (bounded as every small file; redirects checked)."""
        return self.explained(
            what,
            lambda: self.http.get_json(
                url,
                what=what,
                headers=self.headers(),
                source=self.name,
                redirect_hosts=self.redirect_hosts,
            ),
        )

    def _small(self, filename: str, revision: str) -> bytes:
        what = f"{self.name}@{revision}: {filename}"
        return self.explained(
            what,
            lambda: self.http.get_bytes(
                self.file_url(filename, revision),
                what=what,
                headers=self.headers(),
                source=self.name,
                redirect_hosts=self.redirect_hosts,
            ),
        )

    def latest(self, model: str) -> str:
        body = self._small(MANIFEST_NAME, self.latest_revision)
        return version_in_manifest(body, f"{self.name}@{self.latest_revision}: {MANIFEST_NAME}")

    def read_bytes(self, model: str, version: str, filename: str) -> bytes:
        return self._small(filename, self.revision.format(model=model, version=version))

    def download(self, model: str, version: str, filename: str, part: Path, size: int) -> None:
        revision = self.revision.format(model=model, version=version)
        what = f"{self.name}@{revision}: {filename}"
        self.explained(
            what,
            lambda: self.http.download(
                self.file_url(filename, revision),
                part,
                size=size,
                what=what,
                headers=self.headers(),
                source=self.name,
                redirect_hosts=self.redirect_hosts,
            ),
        )
