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

Here: the `Source` interface, `LocalSource`, `MirrorSource`, `parse_source` and the parsing of
what a source says a version is; `github.py`, `hf.py` and `s3.py` hold the hosted sources.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote, urlsplit, urlunsplit

from pipeline import atomic
from pipeline.client.errors import BadResponse
from pipeline.client.network import POINTER_LIMIT, Http
from pipeline.client.printable import printable
from pipeline.client.settings import ClientSettings
from pipeline.errors import ArtifactNotFound, IntegrityError, RemoteError
from pipeline.redaction import safe_url

log = logging.getLogger("pipeline.client")
DEFAULT_TAG = "v{version}"
MAX_VERSION_CHARS = 128  # a version name longer than this is not one (and is not echoed)


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
            raise ArtifactNotFound(
                f"{self.name}: no {model}/{version}/{filename}; check the model name and version "
                f"(`release list {model} --source {self.root}` shows what this directory holds)"
            )
        return p

    def latest(self, model: str) -> str:
        p = self.root / model / "latest"
        if not p.is_file():
            raise ArtifactNotFound(
                f"{self.name}: no release of {model!r} (no {model}/latest); check the model name "
                f"and the directory (`release publish --target local` writes one there)"
            )
        try:
            with open(p, "rb") as f:
                body = f.read(POINTER_LIMIT + 1)
        except OSError as e:
            raise RemoteError(
                f"{self.name}: cannot read {model}/latest: {e}; check the directory's permissions"
            ) from None
        return version_in_pointer(body, f"{self.name}: {model}/latest")

    def read_bytes(self, model: str, version: str, filename: str) -> bytes:
        path = self._path(model, version, filename)
        try:
            return path.read_bytes()
        except OSError as e:
            raise RemoteError(
                f"{self.name}: cannot read {model}/{version}/{filename}: {e}; check the "
                "directory's permissions"
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
        with open(src, "rb") as fin, atomic.open_unshared(part, "r+b" if have else "wb") as fout:
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


def host_port(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    return f"{host}:{parts.port}" if parts.port else host


def short_version(version: str, where: str) -> str:
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
    return short_version(text, where)


def version_in_manifest(body: bytes, where: str) -> str:
    try:
        version = json.loads(body)["version"]
    except (ValueError, KeyError, TypeError, RecursionError):
        raise ArtifactNotFound(
            f"{where}: not a release manifest; is this the repository `release publish` writes to?"
        ) from None
    if not isinstance(version, str):
        raise ArtifactNotFound(
            f"{where}: not a release manifest (version is not a string); is this the repository "
            "`release publish` writes to?"
        )
    return short_version(version, where)


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
        from pipeline.client.hf import HfSource

        assert settings is not None
        return HfSource(spec[3:], endpoint=settings.hf_endpoint, http=http, settings=settings)
    if spec.startswith("github:"):
        from pipeline.client.github import GitHubSource

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
            f"{spec}: not a source; expected hf:ORG/NAME, github:OWNER/REPO, an http(s):// mirror URL, s3://BUCKET/PREFIX or a directory (write a directory as a path, without a scheme)"
        )
    return LocalSource(Path(spec).expanduser())


def __getattr__(name: str) -> Any:
    """`GitHubSource`, `HfSource` and their download hosts, imported from here before they got
    modules of their own (github.py, hf.py)."""
    if name in ("GitHubSource", "GITHUB_DOWNLOAD_HOSTS"):
        from pipeline.client import github

        return getattr(github, name)
    if name in ("HfSource", "HF_DOWNLOAD_HOSTS"):
        from pipeline.client import hf

        return getattr(hf, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
