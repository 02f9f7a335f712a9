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

import contextlib
import errno
import json
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote

from pipeline import atomic
from pipeline.client.network import Http, Unreachable, _safe
from pipeline.errors import ArtifactNotFound, ConfigError, RemoteError
from pipeline.manifest import MANIFEST_NAME

log = logging.getLogger("pipeline.client")
DEFAULT_TAG = "v{version}"


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
            return p.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as e:
            raise RemoteError(f"{self.name}: cannot read {model}/latest: {e}") from None

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
        have = part.stat().st_size if part.exists() else 0
        if have > size or have > src.stat().st_size:
            have = 0
        with open(src, "rb") as fin, atomic.open_nofollow(part, "r+b" if have else "wb") as fout:
            fin.seek(have)
            fout.seek(have)
            fout.truncate()
            shutil.copyfileobj(fin, fout, 1 << 20)


class MirrorSource:
    """A static HTTP(S) mirror of a release store: a plain web server, an S3 bucket, a CDN."""

    def __init__(
        self, base_url: str, *, http: Http | None = None, headers: dict[str, str] | None = None
    ):
        self.base = base_url.rstrip("/")
        self.name = f"mirror:{_safe(self.base)}"
        self.http = http or Http()
        self.headers = headers

    def _url(self, *parts: str) -> str:
        return self.base + "/" + "/".join(quote(p, safe="") for p in parts)

    def latest(self, model: str) -> str:
        body = self.http.get_bytes(
            self._url(model, "latest"), what=f"{self.name}: {model}/latest", headers=self.headers
        )
        return body.decode("utf-8", "replace").strip()

    def read_bytes(self, model: str, version: str, filename: str) -> bytes:
        return self.http.get_bytes(
            self._url(model, version, filename),
            what=f"{self.name}: {model}/{version}/{filename}",
            headers=self.headers,
        )

    def download(self, model: str, version: str, filename: str, part: Path, size: int) -> None:
        self.http.download(
            self._url(model, version, filename),
            part,
            size=size,
            what=f"{self.name}: {model}/{version}/{filename}",
            headers=self.headers,
        )


class GitHubSource:
    """Release assets of one GitHub repository, tagged `v<version>` (see `tag`).

    Without a token it uses the public download URLs
    (`<web_url>/<owner>/<repo>/releases/download/<tag>/<name>`), which need no API calls and
    so no API rate limit. With a token (private repositories) it reads the release through the
    REST API and downloads each asset from its API URL; httpx drops the token when GitHub
    redirects to its storage host.
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

    def _api_headers(self) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {self.token}",
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": "2022-11-28",
        }

    def _version_of(self, model: str, tag: str) -> str:
        prefix, _, suffix = self.tag.replace("{model}", model).partition("{version}")
        if not (tag.startswith(prefix) and tag.endswith(suffix)):
            raise ArtifactNotFound(
                f"{self.name}: the latest release's tag {tag!r} does not have the form {self.tag!r}"
            )
        return tag[len(prefix) : len(tag) - len(suffix)]

    def _release(self, tag: str) -> dict[str, Any]:
        if tag not in self._releases:
            self._releases[tag] = self.http.get_json(
                f"{self.api_url}/repos/{self.repo}/releases/tags/{quote(tag, safe='')}",
                what=f"{self.name}: release {tag}",
                headers=self._api_headers(),
            )
        return self._releases[tag]

    def _asset(self, model: str, version: str, filename: str) -> tuple[str, dict[str, str] | None]:
        """The URL and headers that download one asset."""
        tag = self.tag.format(model=model, version=version)
        if not self.token:
            url = f"{self.web_url}/{self.repo}/releases/download/{quote(tag, safe='')}/{quote(filename, safe='')}"
            return url, None
        for asset in self._release(tag).get("assets") or []:
            if asset.get("name") == filename and asset.get("url"):
                return asset["url"], {
                    **self._api_headers(),
                    "Accept": "application/octet-stream",
                }
        raise ArtifactNotFound(f"{self.name}: release {tag} has no asset {filename}")

    def latest(self, model: str) -> str:
        if self.token:
            release = self.http.get_json(
                f"{self.api_url}/repos/{self.repo}/releases/latest",
                what=f"{self.name}: latest release",
                headers=self._api_headers(),
            )
            return self._version_of(model, str(release.get("tag_name", "")))
        # GitHub redirects /releases/latest/download/<name> to the latest release's asset.
        body = self.http.get_bytes(
            f"{self.web_url}/{self.repo}/releases/latest/download/{MANIFEST_NAME}",
            what=f"{self.name}: latest release's {MANIFEST_NAME}",
        )
        return _version_in_manifest(body, f"{self.name}: latest release's {MANIFEST_NAME}")

    def read_bytes(self, model: str, version: str, filename: str) -> bytes:
        url, headers = self._asset(model, version, filename)
        return self.http.get_bytes(url, what=f"{self.name}: {version}/{filename}", headers=headers)

    def download(self, model: str, version: str, filename: str, part: Path, size: int) -> None:
        url, headers = self._asset(model, version, filename)
        self.http.download(
            url, part, size=size, what=f"{self.name}: {version}/{filename}", headers=headers
        )


class HfSource:
    """One Hugging Face Hub model repository, through `huggingface_hub.hf_hub_download`.

    Versions are the revisions (tags) `v<version>`; `latest` is the version in the manifest on
    `main`. The endpoint and token are huggingface_hub's own (`HF_ENDPOINT`, `HF_TOKEN`, or a
    stored login) unless given. Partial downloads live in huggingface_hub's cache inside our
    cache directory, so it resumes them across runs; finished files are moved into our cache.
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
    ):
        if repo_id.count("/") != 1 or not all(repo_id.split("/")):
            raise ConfigError(f"hf source: expected ORG/NAME, found {repo_id!r}")
        self.repo_id = repo_id
        self.token = token
        self.endpoint = endpoint
        self.revision = revision
        self.latest_revision = latest_revision
        self.progress = sys.stderr.isatty() if progress is None else progress
        self.name = f"hf:{repo_id}"

    def _hub(self) -> Any:
        try:
            import huggingface_hub
        except ImportError:
            raise ConfigError(
                f"{self.name}: the HF Hub source needs huggingface_hub, which is not installed: "
                "pip install 'fastai-release[hf]' (or use a mirror, github: or a local source)"
            ) from None
        return huggingface_hub

    def _download(self, filename: str, revision: str, cache_dir: Path) -> Path:
        hub = self._hub()
        from huggingface_hub import errors

        kwargs: dict[str, Any] = {}
        if not self.progress:
            kwargs["tqdm_class"] = _quiet_tqdm()
        what = f"{self.name}@{revision}: {filename}"
        try:
            return Path(
                hub.hf_hub_download(
                    self.repo_id,
                    filename,
                    revision=revision,
                    cache_dir=cache_dir,
                    token=self.token,
                    endpoint=self.endpoint,
                    **kwargs,
                )
            )
        except errors.LocalEntryNotFoundError as e:  # raised when the Hub cannot be reached
            raise Unreachable(f"{what}: the Hub cannot be reached: {_first_line(e)}") from None
        except errors.RepositoryNotFoundError as e:
            hint = (
                ""
                if self.token or os.environ.get("HF_TOKEN")
                else " (a private repository needs HF_TOKEN)"
            )
            raise ArtifactNotFound(f"{what}: {type(e).__name__}: {_first_line(e)}{hint}") from None
        except (errors.RevisionNotFoundError, errors.EntryNotFoundError) as e:
            raise ArtifactNotFound(f"{what}: {type(e).__name__}: {_first_line(e)}") from None
        except errors.GatedRepoError as e:
            raise RemoteError(f"{what}: access refused (set HF_TOKEN): {_first_line(e)}") from None
        except errors.HfHubHTTPError as e:
            status = getattr(getattr(e, "response", None), "status_code", None)
            cls = Unreachable if status is None or status >= 500 or status == 429 else RemoteError
            raise cls(f"{what}: HTTP {status}: {_first_line(e)}") from None
        except OSError as e:  # connection errors surface as OSError subclasses too
            raise Unreachable(f"{what}: {type(e).__name__}: {_first_line(e)}") from None
        except Exception as e:  # httpx transport errors, when the library lets them through
            if type(e).__module__.startswith(("httpx", "httpcore")):
                raise Unreachable(f"{what}: {type(e).__name__}: {_first_line(e)}") from None
            raise

    def _small(self, filename: str, revision: str) -> bytes:
        with tempfile.TemporaryDirectory(prefix="release-hf-") as tmp:
            return self._download(filename, revision, Path(tmp)).read_bytes()

    def latest(self, model: str) -> str:
        body = self._small(MANIFEST_NAME, self.latest_revision)
        return _version_in_manifest(body, f"{self.name}@{self.latest_revision}: {MANIFEST_NAME}")

    def read_bytes(self, model: str, version: str, filename: str) -> bytes:
        return self._small(filename, self.revision.format(model=model, version=version))

    def download(self, model: str, version: str, filename: str, part: Path, size: int) -> None:
        cache_dir = part.parent / "hf"
        link = self._download(
            filename, self.revision.format(model=model, version=version), cache_dir
        )
        blob = link.resolve()
        if not blob.is_relative_to(cache_dir.resolve()):  # a link planted in the cache
            raise OSError(errno.ELOOP, "leads out of the cache (not followed)", str(link))
        try:
            os.replace(blob, part)  # same file system: the cache directory
        except OSError:
            shutil.copyfile(blob, part)
        with contextlib.suppress(OSError):
            link.unlink()  # a dangling snapshot link only makes the library download again


def _quiet_tqdm() -> Any:
    from tqdm.auto import tqdm

    class QuietTqdm(tqdm):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)

    return QuietTqdm


def _first_line(e: Exception) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def _version_in_manifest(body: bytes, where: str) -> str:
    try:
        version = json.loads(body)["version"]
    except (ValueError, KeyError, TypeError, RecursionError):
        raise ArtifactNotFound(f"{where}: not a release manifest") from None
    return str(version)


def parse_source(spec: str, *, http: Http | None = None) -> Source:
    """A source from its command-line form.

    `hf:ORG/NAME`, `github:OWNER/REPO`, an `http(s)://` base URL of a static mirror,
    `s3://BUCKET/PREFIX` (a private bucket, pipeline.client.s3), or a local release-store
    directory. GitHub reads `GITHUB_TOKEN` (or `GH_TOKEN`) for private repositories
    and `GITHUB_SERVER_URL` / `GITHUB_API_URL` for GitHub Enterprise; the HF Hub reads
    `HF_ENDPOINT` and `HF_TOKEN`.

    Raises:
        ValueError: the form is not one of these.
    """
    if spec.startswith("hf:"):
        return HfSource(spec[3:], endpoint=os.environ.get("HF_ENDPOINT") or None)
    if spec.startswith("github:"):
        return GitHubSource(
            spec[7:],
            token=os.environ.get("GITHUB_TOKEN") or os.environ.get("GH_TOKEN") or None,
            http=http,
            web_url=os.environ.get("GITHUB_SERVER_URL") or "https://github.com",
            api_url=os.environ.get("GITHUB_API_URL") or "https://api.github.com",
        )
    if spec.startswith(("http://", "https://")):
        return MirrorSource(spec, http=http)
    if spec.startswith("s3://"):  # a private bucket; boto3 from the [s3] extra, imported on use
        from pipeline.client.s3 import S3Source

        return S3Source.from_url(spec)
    if "://" in spec:
        raise ValueError(
            f"{spec}: not a source; expected hf:ORG/NAME, github:OWNER/REPO, an http(s):// mirror URL, s3://BUCKET/PREFIX or a directory"
        )
    return LocalSource(Path(spec).expanduser())
