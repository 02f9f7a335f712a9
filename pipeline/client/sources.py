"""Where releases come from: a local store, a static HTTP(S) mirror, GitHub Releases, the HF Hub.

Every source answers three questions: which version `latest` names, the bytes of a small file
(the manifest, its signature) and a model file written to a path (resuming what that path
already holds when the source can). No source verifies anything: the caller checks the manifest's
signature or pin and every file's size and blake3.

A local store and a mirror share one layout, `<base>/<model>/<version>/<file>` and
`<base>/<model>/latest` (a text file holding the newest version), so copying a local store to any
web server or bucket makes a mirror. A GitHub repository or HF Hub repository holds one model:
its releases are tagged `v<version>` (GitHub releases; HF revisions), and `latest` is GitHub's
latest release or the HF repository's `main` revision.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote, urlsplit, urlunsplit

from pipeline import atomic
from pipeline.client.errors import BadResponse, HttpStatus
from pipeline.client.network import POINTER_LIMIT, Http
from pipeline.client.printable import printable
from pipeline.client.settings import ClientSettings
from pipeline.errors import ArtifactNotFound, ConfigError, IntegrityError, RemoteError
from pipeline.manifest import MANIFEST_NAME
from pipeline.redaction import safe_url

log = logging.getLogger("pipeline.client")
DEFAULT_TAG = "v{version}"
MAX_VERSION_CHARS = 128  # a version name longer than this is not one (and is not echoed)
# Where github.com sends a release asset's download (its storage hosts, old and current).
GITHUB_DOWNLOAD_HOSTS = (
    "release-assets.githubusercontent.com",
    "objects.githubusercontent.com",
    "github-releases.githubusercontent.com",
)
# Where huggingface.co sends a file's download: its LFS CDN and Xet storage, all under these.
HF_DOWNLOAD_HOSTS = ("*.hf.co", "hf.co", "*.huggingface.co", "huggingface.co")


class Source(Protocol):
    """A place releases can be fetched from."""

    name: str

    def latest(self, model: str) -> str:
        """The version `latest` points at.

        Raises:
            ArtifactNotFound: the source has no release of `model`.
            RemoteError: the source cannot be reached (Unreachable) or refuses.
        """
        ...

    def read_bytes(self, model: str, version: str, filename: str) -> bytes:
        """A small file (the manifest, its signature). Raises as `latest`."""
        ...

    def download(self, model: str, version: str, filename: str, part: Path, size: int) -> None:
        """Bring `part` to the file's `size` bytes (not verified: the caller checks blake3).

        `part` may already hold the start of the file; sources that can resume do.
        """
        ...


class LocalSource:
    """A local release store or a copy of one (what `release publish --target local` writes)."""

    local = True  # the operator's own directory: integrity-only without a trust root (trust.py)

    def __init__(self, root: Path):
        self.root = Path(root)
        self.name = f"local:{self.root}"

    def _path(self, model: str, version: str, filename: str) -> Path:
        p = self.root / model / version / filename
        if not p.is_file():
            raise ArtifactNotFound(f"{self.name}: no {model}/{version}/{filename}")
        return p

    def latest(self, model: str) -> str:
        p = self.root / model / "latest"
        if not p.is_file():
            raise ArtifactNotFound(f"{self.name}: no release of {model!r} (no {model}/latest)")
        try:
            with open(p, "rb") as f:
                body = f.read(POINTER_LIMIT + 1)
        except OSError as e:
            raise RemoteError(f"{self.name}: cannot read {model}/latest: {e}") from None
        return version_in_pointer(body, f"{self.name}: {model}/latest")

    def read_bytes(self, model: str, version: str, filename: str) -> bytes:
        path = self._path(model, version, filename)
        try:
            return path.read_bytes()
        except OSError as e:
            raise RemoteError(
                f"{self.name}: cannot read {model}/{version}/{filename}: {e}"
            ) from None

    def download(self, model: str, version: str, filename: str, part: Path, size: int) -> None:
        src = self._path(model, version, filename)
        found = src.stat().st_size
        if found > size:  # never copy more than the manifest says
            raise IntegrityError(
                f"{self.name}: {model}/{version}/{filename}: {found} bytes, the manifest says "
                f"{size}; not copied"
            )
        have = part.stat().st_size if part.exists() else 0
        if have > size or have > found:
            have = 0
        with open(src, "rb") as fin, atomic.open_nofollow(part, "r+b" if have else "wb") as fout:
            fin.seek(have)
            fout.seek(have)
            fout.truncate()
            shutil.copyfileobj(fin, fout, 1 << 20)


class MirrorSource:
    """A static HTTP(S) mirror of a release store: a plain web server, an S3 bucket, a CDN.

    The base URL may carry a query string (a token, a pre-signed base): each file's path is
    appended to the base's path and the query kept on every request. Neither the query nor user
    info in the URL is ever printed or logged. `headers` (e.g. an API key) go to the mirror's
    own origin only; its redirects stay on that origin unless the Http allows another host.
    """

    def __init__(
        self, base_url: str, *, http: Http | None = None, headers: dict[str, str] | None = None
    ):
        parts = urlsplit(base_url)
        self.base = urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))
        self.query = parts.query
        self.name = f"mirror:{safe_url(self.base)}"
        self.http = http or Http()
        self.headers = headers

    def _url(self, *parts: str) -> str:
        url = self.base + "/" + "/".join(quote(p, safe="") for p in parts)
        return f"{url}?{self.query}" if self.query else url

    def latest(self, model: str) -> str:
        what = f"{self.name}: {model}/latest"
        body = self.http.get_bytes(
            self._url(model, "latest"),
            what=what,
            headers=self.headers,
            limit=POINTER_LIMIT,
            source=self.name,
        )
        return version_in_pointer(body, what)

    def read_bytes(self, model: str, version: str, filename: str) -> bytes:
        return self.http.get_bytes(
            self._url(model, version, filename),
            what=f"{self.name}: {model}/{version}/{filename}",
            headers=self.headers,
            source=self.name,
        )

    def download(self, model: str, version: str, filename: str, part: Path, size: int) -> None:
        self.http.download(
            self._url(model, version, filename),
            part,
            size=size,
            what=f"{self.name}: {model}/{version}/{filename}",
            headers=self.headers,
            source=self.name,
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
        own = tuple(_host_port(u) for u in (self.web_url, self.api_url))
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
                f"the form {self.tag!r}"
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
            return _short_version(self._version_of(model, tag), f"{self.name}: latest release")
        # GitHub redirects /releases/latest/download/<name> to the latest release's asset.
        what = f"{self.name}: latest release's {MANIFEST_NAME}"
        body = self.http.get_bytes(
            f"{self.web_url}/{self.repo}/releases/latest/download/{MANIFEST_NAME}",
            what=what,
            source=self.name,
            redirect_hosts=self.redirect_hosts,
        )
        return _version_in_manifest(body, what)

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
        return (_host_port(self.endpoint),) + (HF_DOWNLOAD_HOSTS if on_hub else ())

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
        return _version_in_manifest(body, f"{self.name}@{self.latest_revision}: {MANIFEST_NAME}")

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


def _host_port(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    return f"{host}:{parts.port}" if parts.port else host


def _short_version(version: str, where: str) -> str:
    if len(version) > MAX_VERSION_CHARS:
        raise BadResponse(
            f"{where}: a version name of {len(version)} characters (at most {MAX_VERSION_CHARS}): "
            f"'{printable(version, 60)}'; not a release of this source"
        )
    return version


def version_in_pointer(body: bytes, where: str) -> str:
    """The version a `latest` file names (its text, stripped).

    Raises:
        BadResponse: more than a version name could be, or not UTF-8 (only a short, escaped
            excerpt is quoted: a hostile pointer never fills a log or a terminal).
    """
    if len(body) > POINTER_LIMIT:
        raise BadResponse(
            f"{where}: more than {POINTER_LIMIT} bytes; a `latest` file holds a version"
        )
    try:
        text = body.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise BadResponse(f"{where}: not UTF-8 text: '{printable(body, 60)}'") from None
    return _short_version(text, where)


def _version_in_manifest(body: bytes, where: str) -> str:
    try:
        version = json.loads(body)["version"]
    except (ValueError, KeyError, TypeError, RecursionError):
        raise ArtifactNotFound(f"{where}: not a release manifest") from None
    if not isinstance(version, str):
        raise ArtifactNotFound(f"{where}: not a release manifest (version is not a string)")
    return _short_version(version, where)


def parse_source(
    spec: str, *, http: Http | None = None, settings: ClientSettings | None = None
) -> Source:
    """A source from its command-line form.

    `hf:ORG/NAME`, `github:OWNER/REPO`, an `http(s)://` base URL of a static mirror,
    `s3://BUCKET/PREFIX` (a private bucket, pipeline.client.s3), or a local release-store
    directory. From `settings` (the environment's when none are given): GitHub's token
    (`GITHUB_TOKEN` or `GH_TOKEN`) for private repositories and `GITHUB_SERVER_URL` /
    `GITHUB_API_URL` for GitHub Enterprise; the HF Hub's `HF_ENDPOINT` and `HF_TOKEN`.

    Raises:
        ValueError: the form is not one of these (ConfigError: a ValueError too).
    """
    if spec.startswith(("hf:", "github:")) and settings is None:
        settings = ClientSettings.from_env()
    if spec.startswith("hf:"):
        assert settings is not None
        return HfSource(spec[3:], endpoint=settings.hf_endpoint, http=http, settings=settings)
    if spec.startswith("github:"):
        assert settings is not None
        return GitHubSource(
            spec[7:],
            token=settings.github_token,
            http=http,
            web_url=settings.github_server_url or "https://github.com",
            api_url=settings.github_api_url or "https://api.github.com",
        )
    if spec.startswith(("http://", "https://")):
        return MirrorSource(spec, http=http)
    if spec.startswith("s3://"):  # a private bucket; boto3 from the [s3] extra, imported on use
        from pipeline.client.s3 import S3Source

        return S3Source.from_url(spec, http=http)
    if "://" in spec:
        raise ValueError(
            f"{spec}: not a source; expected hf:ORG/NAME, github:OWNER/REPO, an http(s):// mirror URL, s3://BUCKET/PREFIX or a directory"
        )
    return LocalSource(Path(spec).expanduser())
