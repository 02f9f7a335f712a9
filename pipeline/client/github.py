"""The `github:OWNER/REPO` source: release assets of one GitHub repository, read over HTTP."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from pipeline.client.errors import BadResponse
from pipeline.client.network import Http
from pipeline.client.printable import printable
from pipeline.client.sources import DEFAULT_TAG, host_port, short_version, version_in_manifest
from pipeline.errors import ArtifactNotFound, ConfigError
from pipeline.manifest import MANIFEST_NAME

# Where github.com sends a release asset's download (its storage hosts, old and current).
GITHUB_DOWNLOAD_HOSTS = (
    "release-assets.githubusercontent.com",
    "objects.githubusercontent.com",
    "github-releases.githubusercontent.com",
)


class GitHubSource:
    """Release assets of one GitHub repository, tagged `v<version>` (see `tag`).

    Without a token it uses the public download URLs
    (`<web_url>/<owner>/<repo>/releases/download/<tag>/<name>`), which need no API calls and
    so no API rate limit. With a token (private repositories) it reads the release through the
    REST API and downloads each asset from the API's asset URL, which it builds itself from the
    asset's id: the token goes to the API host and nowhere else (a redirect to storage drops it).
    Redirects may lead to the web and API hosts and GitHub's download hosts
    (`GITHUB_DOWNLOAD_HOSTS`, for github.com), and to what the Http allows.
    """

    def __init__(
        self,
        repo: str,
        *,
        token: str | None = None,
        http: Http | None = None,
        web_url: str = "https://github.com",
        api_url: str = "https://api.github.com",
        tag: str = DEFAULT_TAG,
    ):
        if repo.count("/") != 1 or not all(repo.split("/")):
            raise ConfigError(f"github source: expected OWNER/REPO, found {repo!r}")
        self.repo = repo
        self.token = token
        self.http = http or Http()
        self.web_url = web_url.rstrip("/")
        self.api_url = api_url.rstrip("/")
        self.tag = tag
        self.name = f"github:{repo}"
        self._releases: dict[str, dict[str, Any]] = {}

    @property
    def redirect_hosts(self) -> tuple[str, ...]:
        """The hosts this source's redirects may lead to."""
        own = tuple(host_port(u) for u in (self.web_url, self.api_url))
        on_github = urlsplit(self.web_url).hostname == "github.com"
        return own + (GITHUB_DOWNLOAD_HOSTS if on_github else ())

    def _api_headers(self) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {self.token}",
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": "2022-11-28",
        }

    def get_json(self, url: str, what: str, headers: dict[str, str] | None) -> Any:
        """A JSON answer of this source (bounded as every small file; its redirects checked)."""
        return self.http.get_json(
            url, what=what, headers=headers, source=self.name, redirect_hosts=self.redirect_hosts
        )

    def _version_of(self, model: str, tag: str) -> str:
        prefix, _, suffix = self.tag.replace("{model}", model).partition("{version}")
        if not (tag.startswith(prefix) and tag.endswith(suffix)):
            raise ArtifactNotFound(
                f"{self.name}: the latest release's tag '{printable(tag, 80)}' does not have "
                f"the form {self.tag!r}; publish releases with that tag, or give the source the "
                "tag's form (GitHubSource(tag=...))"
            )
        return tag[len(prefix) : len(tag) - len(suffix)]

    def _release(self, tag: str) -> dict[str, Any]:
        if tag not in self._releases:
            release = self.get_json(
                f"{self.api_url}/repos/{self.repo}/releases/tags/{quote(tag, safe='')}",
                f"{self.name}: release {tag}",
                self._api_headers(),
            )
            if not isinstance(release, dict):
                raise BadResponse(f"{self.name}: release {tag}: not a release object")
            self._releases[tag] = release
        return self._releases[tag]

    def _asset(self, model: str, version: str, filename: str) -> tuple[str, dict[str, str] | None]:
        """The URL and headers that download one asset."""
        tag = self.tag.format(model=model, version=version)
        if not self.token:
            return self.download_url(tag, filename), None
        return self.asset_in(self._release(tag), tag, filename)

    def download_url(self, tag: str, filename: str) -> str:
        """The public download URL of a release asset (no API call, no token)."""
        return (
            f"{self.web_url}/{self.repo}/releases/download/{quote(tag, safe='')}/"
            f"{quote(filename, safe='')}"
        )

    def asset_in(self, release: Any, tag: str, filename: str) -> tuple[str, dict[str, str] | None]:
        """The API URL and headers that download `filename` of a release (an API answer).

        Raises:
            BadResponse: the asset has no usable id.
            ArtifactNotFound: the release has no such (uploaded) asset.
        """
        assets = release.get("assets") if isinstance(release, dict) else None
        for asset in assets if isinstance(assets, list) else []:
            if not isinstance(asset, dict) or asset.get("name") != filename:
                continue
            if asset.get("state", "uploaded") != "uploaded":
                continue
            asset_id = asset.get("id")
            if not isinstance(asset_id, int) or isinstance(asset_id, bool) or asset_id < 0:
                raise BadResponse(
                    f"{self.name}: release {tag}: asset {filename} has no usable id "
                    f"({printable(asset_id, 40)})"
                )
            # Built here, not taken from the answer's `url`: the token goes to the API only.
            url = f"{self.api_url}/repos/{self.repo}/releases/assets/{asset_id}"
            return url, {**self._api_headers(), "Accept": "application/octet-stream"}
        raise ArtifactNotFound(f"{self.name}: release {tag} has no asset {filename}")

    def latest(self, model: str) -> str:
        if self.token:
            release = self.get_json(
                f"{self.api_url}/repos/{self.repo}/releases/latest",
                f"{self.name}: latest release",
                self._api_headers(),
            )
            tag = release.get("tag_name") if isinstance(release, dict) else None
            if not isinstance(tag, str):
                raise BadResponse(f"{self.name}: latest release: no tag_name in the answer")
            return short_version(self._version_of(model, tag), f"{self.name}: latest release")
        # GitHub redirects /releases/latest/download/<name> to the latest release's asset.
        what = f"{self.name}: latest release's {MANIFEST_NAME}"
        body = self.http.get_bytes(
            f"{self.web_url}/{self.repo}/releases/latest/download/{MANIFEST_NAME}",
            what=what,
            source=self.name,
            redirect_hosts=self.redirect_hosts,
        )
        return version_in_manifest(body, what)

    def read_bytes(self, model: str, version: str, filename: str) -> bytes:
        url, headers = self._asset(model, version, filename)
        return self.http.get_bytes(
            url,
            what=f"{self.name}: {version}/{filename}",
            headers=headers,
            source=self.name,
            redirect_hosts=self.redirect_hosts,
        )

    def download(self, model: str, version: str, filename: str, part: Path, size: int) -> None:
        url, headers = self._asset(model, version, filename)
        self.http.download(
            url,
            part,
            size=size,
            what=f"{self.name}: {version}/{filename}",
            headers=headers,
            source=self.name,
            redirect_hosts=self.redirect_hosts,
        )
